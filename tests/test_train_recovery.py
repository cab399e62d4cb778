"""What a run keeps and how it starts again: signals, damaged or foreign checkpoints, metrics."""

import io
import json
import os
import signal
import shutil

import jax
import numpy as np
import pytest

from test_train_runs import metrics, run_script, small_run, tokenizer_path  # noqa: F401 (a fixture)
from zoo import config, rundir, runs
from zoo.train import Interrupted, TrainingError, train
from zoo.train.checkpoint import Checkpoints
from zoo.checksums import MANIFEST, write_manifest


def plain(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def assert_same_state(workdir, reference, step):
    resumed, straight = (Checkpoints(path / "checkpoints").read_state(step) for path in (workdir, reference))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(plain(a), plain(b)), resumed, straight)


class SignalOn(io.StringIO):
    """An output stream that sends this process `signum` when a line containing `text` is written."""

    def __init__(self, text, signum=signal.SIGINT):
        super().__init__()
        self.text, self.signum, self.sent = text, signum, False

    def write(self, s):
        if self.text in s and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return super().write(s)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tokenizer_path):
    """An uninterrupted 6-step run: checkpoints 2, 4, 6."""
    workdir = tmp_path_factory.mktemp("straight")
    train(small_run(tokenizer_path, steps=6), workdir)
    return workdir


@pytest.mark.parametrize("during, line, saved", [("a step", "] 1/6 |", 1), ("a save", "] 2/6 |", 2)])
def test_a_signal_saves_the_step_reached_and_the_run_resumes_identically(tmp_path, tokenizer_path, straight, during, line, saved):
    cfg = small_run(tokenizer_path, steps=6, checkpoint_every=2, log_every=1)
    with pytest.raises(Interrupted) as stop:
        train(cfg, tmp_path, out=SignalOn(line, signal.SIGTERM))  # the progress line comes right after a step (and its save)
    assert (stop.value.step, stop.value.saved, stop.value.exit_code) == (saved, saved, 143)
    assert f"interrupted at step {saved}; checkpoint {saved} holds it. Rerun the same command to resume" == stop.value.describe()
    assert Checkpoints(tmp_path / "checkpoints").all_steps() == [saved] and [m["step"] for m in metrics(tmp_path)] == list(range(1, saved + 1))
    assert rundir.judge(Checkpoints(tmp_path / "checkpoints").step_dir(saved)) == (None, True)  # whole, with its checksums
    train(small_run(tokenizer_path, steps=6), tmp_path)
    assert_same_state(tmp_path, straight, 6)


def test_a_signal_before_the_first_step_writes_no_checkpoint_and_no_empty_logs(tmp_path, tokenizer_path):
    with pytest.raises(Interrupted) as stop:
        train(small_run(tokenizer_path), tmp_path, out=SignalOn("starting at step 0"))
    assert stop.value.exit_code == 130 and "interrupted at step 0; no checkpoint was written" in stop.value.describe()
    assert not (tmp_path / "checkpoints").exists() or not Checkpoints(tmp_path / "checkpoints").all_steps()
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "loss.png").exists()


@pytest.mark.parametrize("during, line, outcomes", [
    ("tokenizer training", "training a 512-piece tokenizer", {"interrupted before training began; no checkpoint was written": []}),
    ("compilation", "starting at step 0", {  # the first step compiles; the signal lands before it starts or while it runs
        "interrupted at step 0; no checkpoint was written": [],
        "interrupted at step 1; checkpoint 1 holds it. Rerun the same command to resume": [1],
    }),
])
def test_train_py_stops_cleanly_on_sigint(tmp_path, tokenizer_path, during, line, outcomes):
    cfg = small_run(tokenizer_path, steps=40, checkpoint_every=20, data={"tokenizer": None})
    (tmp_path / "run.toml").write_text(config.to_toml(cfg))
    process = run_script(tmp_path / "run", tmp_path / "run.toml", wait=False)
    lines = []
    for text in process.stdout:
        lines.append(text)
        if line in text:
            process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    output = "".join(lines)
    assert process.returncode == 130, output
    (message,) = [m for m in outcomes if m in output] or [None]
    assert "Traceback" not in output and message is not None, output
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (Checkpoints(checkpoints).all_steps() if checkpoints.exists() else []) == outcomes[message]


def test_metrics_hold_each_step_once_after_a_resume(tmp_path, tokenizer_path):
    train(small_run(tokenizer_path, steps=6, log_every=1, checkpoint_every=4), tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / "6")  # as if killed after logging step 6, before its save
    train(small_run(tokenizer_path, steps=6, log_every=1, checkpoint_every=4), tmp_path)
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_silent_damage_is_found_by_checksums_and_the_previous_checkpoint_used(tmp_path, tokenizer_path, straight, capsys):
    shutil.copytree(straight, tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "6"
    largest = max((p for p in latest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # same size, other bytes
    largest.write_bytes(bytes(data))
    train(small_run(tokenizer_path, steps=6), tmp_path / "run")
    out = capsys.readouterr().out
    assert "checkpoint 6 is damaged: the bytes of its file" in out and "resumed from step 4" in out
    assert_same_state(tmp_path / "run", straight, 6)  # step 6 again, from step 4, as it was


def test_when_every_checkpoint_is_damaged_the_restart_is_a_true_fresh_start(tmp_path, tokenizer_path, straight, capsys):
    shutil.copytree(straight, tmp_path / "run")
    for step in (2, 4, 6):  # unreadable, with no checksums to say so: found only by trying to read them
        (tmp_path / "run" / "checkpoints" / str(step) / MANIFEST).unlink()
        (tmp_path / "run" / "checkpoints" / str(step) / "data_position" / "metadata").write_text("{}")
    train(small_run(tokenizer_path, steps=6), tmp_path / "run")
    assert "STARTING OVER FROM STEP 0" in capsys.readouterr().out
    assert_same_state(tmp_path / "run", straight, 6)


def test_a_whole_checkpoint_that_does_not_fit_stops_with_everything_kept(tmp_path, tokenizer_path, straight):
    shutil.copytree(straight, tmp_path / "run")
    other = small_run(tokenizer_path, steps=6, model={"ffn_dim": 96})
    (tmp_path / "run" / "config.toml").write_text(config.to_toml(other))  # as if the config were edited by hand
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(TrainingError, match=r"checkpoint 6 .* does not fit this run: its \S+ffn\S+ has shape \[2, \d+, \d+\], this run's has"):
        train(other, tmp_path / "run")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_an_intact_checkpoint_that_cannot_be_read_here_is_not_thrown_away(tmp_path, tokenizer_path, straight):
    shutil.copytree(straight, tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "6"
    shutil.rmtree(latest / "data_position")
    write_manifest(latest)  # its checksums say it is whole as it is
    assert json.loads((latest / MANIFEST).read_text())
    with pytest.raises(TrainingError, match="checkpoint 6 .* is intact \\(its checksums match\\) but cannot be read here"):
        train(small_run(tokenizer_path, steps=6), tmp_path / "run")
    assert Checkpoints(tmp_path / "run" / "checkpoints").all_steps() == [2, 4, 6]


def test_loading_a_run_for_inference_passes_over_a_damaged_checkpoint(tmp_path, straight):
    shutil.copytree(straight, tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "6"
    largest = max((p for p in latest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))
    run = runs.load(tmp_path / "run")
    assert run.step == 4 and len(run.notes) == 1 and "checkpoint 6 of" in run.notes[0] and "using checkpoint 4" in run.notes[0]
    with pytest.raises(runs.RunError, match="checkpoint 6 of .* is damaged: the bytes of its file"):
        runs.load(tmp_path / "run", step=6)


def test_a_torn_last_line_of_the_metrics_is_dropped_and_the_run_goes_on(tmp_path, tokenizer_path, straight, capsys):
    shutil.copytree(straight, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")
    with (tmp_path / "run" / "metrics.jsonl").open("ab") as log:
        log.write(b'{"step": 7, "loss": 3.\xff\xfe')  # a kill in the middle of a write, cutting a character too
    train(small_run(tokenizer_path, steps=6), tmp_path / "run")
    assert "metrics.jsonl:4 is not a whole record" in capsys.readouterr().out
    assert [m["step"] for m in metrics(tmp_path / "run")] == [2, 4, 6] and (tmp_path / "run" / "loss.png").exists()
    assert_same_state(tmp_path / "run", straight, 6)


def test_entries_named_like_checkpoints_are_set_aside_not_deleted(tmp_path, tokenizer_path, straight, capsys):
    shutil.copytree(straight, tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "30").write_text("a file of mine")
    (checkpoints / "99").mkdir()  # an empty directory, no checkpoint
    train(small_run(tokenizer_path, steps=8), tmp_path / "run")
    out = capsys.readouterr().out
    assert "checkpoints/30 is not a complete checkpoint; moved it to" in out and "resumed from step 6" in out
    (stray,) = checkpoints.glob("stray-30-*")
    assert stray.read_text() == "a file of mine" and len(list(checkpoints.glob("stray-99-*"))) == 1


def test_inference_passes_over_an_unfinished_newest_checkpoint_in_one_line(tmp_path, straight, capsys):
    from test_cli import load_script

    shutil.copytree(straight, tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "99").mkdir()
    code = load_script("sample").main(["--checkpoint", str(tmp_path / "run"), "--prompt-ids", "1,5", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err and "WARNING" not in err, err
    assert "sample.py: warning: checkpoint 99 of" in err and "is not a complete checkpoint" in err and "using checkpoint 6" in err


def test_a_divergence_right_after_a_resume_names_the_checkpoint_and_the_one_before(tmp_path, tokenizer_path, straight):
    shutil.copytree(straight, tmp_path / "run")
    diverging = small_run(tokenizer_path, steps=8, checkpoint_every=8, log_every=1, learning_rate=1e9, warmup_steps=0, grad_clip=1e9)
    with pytest.raises(TrainingError) as error:
        train(diverging, tmp_path / "run")
    message = str(error.value)
    assert "training diverged by step" in message and "It resumed from checkpoint 6" in message
    assert "rerun to resume from checkpoint 4" in message
    total = sum(leaf.size for leaf in jax.tree.leaves(Checkpoints(tmp_path / "run" / "checkpoints").read_state(6)["params"]))
    count = int(message.split(" parameter values are not finite")[0].rsplit(" ", 1)[-1].replace(",", ""))
    assert 0 < count <= total  # counted once, not once per step since the last log
