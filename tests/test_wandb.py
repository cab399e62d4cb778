"""wandb logging of a run: offline runs' records, read back from the transaction logs wandb writes."""

import json
import struct
import sys

import pytest

from test_cli import load_script
from test_train_runs import metrics, small_run, tokenizer_path  # noqa: F401 (a fixture)
from zoo.train import train
from zoo.train.tensorboard import scalars
from zoo.train.wandb_run import DIRECTORY, INSTALL, STATE, WandbRun, check_available


def record(step: int, **extra) -> dict:  # as Loop._record makes them
    return {
        "step": step, "loss": 5.0 / step, "learning_rate": 1e-3 * step, "grad_norm": 0.5 + step,
        "tokens_per_second": 123456.7 * step, "mfu": 0.01 * step, "moe_balance_loss": 1.01,
        "expert_load": [0.1, 0.25, 0.4, 0.25], **extra,
    }


@pytest.fixture
def wandb(tmp_path, monkeypatch):
    """wandb in offline mode, with everything it writes outside a run directory under tmp_path."""
    wandb = pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_NAME", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / "netrc"))
    wandb.teardown()  # the settings are read from the environment when wandb sets up, once per process
    yield wandb
    wandb.teardown()


def transactions(path):
    """The records of a .wandb file: a 7-byte header (":W&B", a magic number, a version), then a
    leveldb log (32 KiB blocks of chunks: crc32, length, type FULL 1 / FIRST 2 / MIDDLE 3 / LAST 4,
    data; a block's last bytes, too few for a chunk's header, are padding) of wandb.proto Records."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, at, block, parts = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while at + 7 <= len(data):
        if block - at % block < 7:
            at += block - at % block
            continue
        _, length, kind = struct.unpack("<IHB", data[at : at + 7])
        parts = (b"" if kind in (1, 2) else parts) + data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            yield Record.FromString(parts)


def logged(workdir) -> tuple[set[str], dict[int, dict[str, float]]]:
    """The run ids and the history (step -> tag -> value) of the offline runs in WORKDIR/wandb/;
    each step in one of them only. Tears wandb down first: that waits for its service process to
    write out all it was sent, which finish() does not (under load it returns before)."""
    import wandb

    wandb.teardown()
    ids, history = set(), {}
    for path in sorted((workdir / DIRECTORY).glob("offline-run-*/run-*.wandb")):
        for r in transactions(path):
            if r.HasField("run"):
                ids.add(r.run.run_id)
            if r.HasField("history"):
                assert r.history.step.num not in history
                history[r.history.step.num] = {
                    "/".join(item.nested_key): json.loads(item.value_json)
                    for item in r.history.item if not item.nested_key[0].startswith("_")  # wandb's _step, _runtime, ...
                }
    return ids, history


def test_records_read_back(wandb, tmp_path, capfd):
    workdir = tmp_path / "run"
    workdir.mkdir()
    records = [record(10), record(20, eval_loss=3.5, eval_perplexity=33.1), record(30, z_loss=0.01)]
    sink = WandbRun(workdir, {"model": {"d_model": 32}, "steps": 30}, project="zoo-test")
    assert [sink.write(r) for r in records] == [None] * 3
    sink.close()
    ids, history = logged(workdir)
    assert history == {r["step"]: scalars(r) for r in records}
    assert {"train/loss", "eval/loss", "moe/expert_load/3"} <= history[20].keys()
    assert ids == {json.loads((workdir / DIRECTORY / STATE).read_text())["id"]}
    assert json.loads((workdir / DIRECTORY / STATE).read_text())["step"] == 30
    assert capfd.readouterr() == ("", "")  # wandb says nothing and leaves stdout and stderr alone


def test_resumed_run_continues_the_wandb_run(wandb, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    first = WandbRun(workdir, {})
    for step in (10, 20, 30):
        first.write(record(step))
    first.close()
    resumed = WandbRun(workdir, {})
    resumed.purge_step = 21  # resumed from step 20's checkpoint: steps 30 on run again
    note = resumed.write(record(30, loss=9.0))
    assert "already has steps up to 30" in note and "from step 31 on" in note and "\n" not in note
    assert resumed.write(record(40)) is None
    resumed.close()
    ids, history = logged(workdir)
    assert len(ids) == 1 and len(list((workdir / DIRECTORY).glob("offline-run-*"))) == 2
    assert sorted(history) == [10, 20, 30, 40]
    assert history[30] == scalars(record(30))  # wandb keeps what it had; the rerun's step 30 is not sent
    assert history[40] == scalars(record(40))


def test_check_available_without_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    message = check_available()
    assert INSTALL in message and "\n" not in message
    sink = WandbRun(tmp_path, {})
    note = sink.write(record(1))
    assert INSTALL in note and "\n" not in note
    assert sink.write(record(2)) is None
    sink.close()


def test_online_without_login_is_one_note(wandb, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb.teardown()
    sink = WandbRun(tmp_path, {})
    note = sink.write(record(1))
    assert "wandb login" in note and "WANDB_MODE=offline" in note and "\n" not in note
    assert sink.write(record(2)) is None
    sink.close()
    assert not (tmp_path / DIRECTORY).exists()
    assert capfd.readouterr() == ("", "")


def test_failing_init_is_one_note(wandb, tmp_path, monkeypatch):
    def init(**kwargs):
        raise wandb.errors.CommError("the server said no\nand more lines")

    monkeypatch.setattr(wandb, "init", init)
    sink = WandbRun(tmp_path, {})
    note = sink.write(record(1))
    assert "the server said no" in note and "\n" not in note
    assert sink.write(record(2)) is None
    sink.close()


def test_train_logs_to_wandb_and_fresh_sets_its_files_aside(wandb, tmp_path, tokenizer_path):
    """The sink wired into a run (train(..., wandb=...), as train.py --wandb does), on test_train_runs'
    small run, whose programs that module has compiled already."""
    train(small_run(tokenizer_path), tmp_path, wandb="zoo-test")
    ids, history = logged(tmp_path)
    assert len(ids) == 1 and history == {m["step"]: scalars(m) for m in metrics(tmp_path)}
    train(small_run(tokenizer_path, steps=2), tmp_path, fresh=True)  # no wandb this time
    (aside,) = (tmp_path / "previous").iterdir()
    assert (aside / DIRECTORY / STATE).is_file() and not (tmp_path / DIRECTORY).exists()


def test_train_py_wandb_without_the_package_stops_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SystemExit) as stop:
        load_script("train").main(["--wandb", "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == f"train.py: error: --wandb needs the wandb package; {INSTALL}\n"
    assert not (tmp_path / "run").exists()
