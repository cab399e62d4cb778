"""TensorBoard events of a run: the records of metrics.jsonl, read back from the event files."""

import io
import json
import struct
import sys

import pytest

from zoo.rundir import METRICS
from zoo.train.report import Report
from zoo.rundir import TENSORBOARD
from zoo.train.tensorboard import INSTALL, scalars

pytest.importorskip("tensorboardX")
from tensorboardX.proto.event_pb2 import Event, SessionLog  # noqa: E402


def record(step: int, **extra) -> dict:  # as Loop._record makes them
    return {
        "step": step, "loss": 5.0 / step, "learning_rate": 1e-3 * step, "grad_norm": 0.5 + step,
        "tokens_per_second": 123456.7 * step, "mfu": 0.01 * step, "moe_balance_loss": 1.01,
        "drop_fraction": 0.0, "expert_load": [0.1 * step, 0.25, 0.4, 0.25 - 0.1 * step], **extra,
    }


def events(directory) -> tuple[dict[str, dict[int, float]], dict[str, set[int]]]:
    """The scalars (tag -> step -> value) and histograms (tag -> steps) in the event files, read
    as TensorBoard does: TFRecord-framed Event protos, file by file; a SessionLog START at step S
    drops the earlier files' events at steps S and later (tensorboardX's purge_step)."""
    found, histograms = {}, {}
    for path in sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4  # length, its crc, the event, its crc
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for steps in (*found.values(), *histograms.values()):
                    for step in [s for s in steps if s >= event.step]:
                        steps.remove(step) if isinstance(steps, set) else steps.pop(step)
            for value in event.summary.value:
                if value.HasField("histo"):
                    histograms.setdefault(value.tag, set()).add(event.step)
                else:
                    found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found, histograms


def expected(records: list[dict]) -> dict[str, dict[int, float]]:
    out = {}
    for r in records:
        for tag, value in scalars(r).items():
            out.setdefault(tag, {})[r["step"]] = value
    return out


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for tag in want:
        assert got[tag] == pytest.approx(want[tag], rel=1e-6), tag  # events hold float32


def run(workdir, steps, resumed_from=0, out=None):
    report = Report(workdir, 4, out or io.StringIO(), enabled=True)
    report.resume(resumed_from)
    for r in steps:
        report.log(r, eta_seconds=1.0)
    report.close()


def test_events_hold_the_metrics_and_a_resumed_run_continues_them(tmp_path):
    first = [record(1), record(2, eval_loss=2.5, eval_perplexity=12.18), record(3), record(4)]
    run(tmp_path, first)  # killed after logging step 4, its last checkpoint at step 2
    metrics = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    got, histograms = events(tmp_path / TENSORBOARD)
    assert_same(got, expected(metrics))
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second", "train/mfu",
            "train/moe_balance_loss", "train/drop_fraction", "eval/loss", "eval/perplexity",
            "moe/expert_load/0", "moe/expert_load/3"} <= got.keys()
    assert got["eval/loss"] == {2: 2.5} and histograms == {"moe/expert_load": {1, 2, 3, 4}}

    run(tmp_path, [record(3, loss=9.0, eval_loss=2.0, eval_perplexity=7.39)], resumed_from=2)  # killed again
    assert len(list((tmp_path / TENSORBOARD).iterdir())) == 2  # a new event file beside the first
    metrics = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert [r["step"] for r in metrics] == [1, 2, 3]
    got, histograms = events(tmp_path / TENSORBOARD)  # the first file's steps 3 and 4 are dropped
    assert_same(got, expected(metrics))
    assert got["train/loss"][3] == 9.0 and histograms == {"moe/expert_load": {1, 2, 3}}


def test_without_tensorboardx_a_run_says_so_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
    out = io.StringIO()
    run(tmp_path, [record(1), record(2)], out=out)
    notes = [line for line in out.getvalue().splitlines() if "TensorBoard" in line]
    assert notes == [f"TensorBoard events are not written (no tensorboardX); {INSTALL} to get them in {tmp_path / TENSORBOARD}"]
    assert len((tmp_path / METRICS).read_text().splitlines()) == 2 and not (tmp_path / TENSORBOARD).exists()


def test_only_process_zero_writes_events(tmp_path):
    report = Report(tmp_path, 4, io.StringIO(), enabled=False)
    report.resume(0)
    report.log(record(1), eta_seconds=1.0)
    report.close()
    assert list(tmp_path.iterdir()) == []
