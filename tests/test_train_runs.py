"""Whole training runs on a small corpus: the work directory, resume, parallel layouts, failures."""

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from zoo import config
from zoo.tokenizer import Tokenizer
from zoo.train import TrainingError, train
from zoo.train.checkpoint import Checkpoints
from zoo.train.sources import expand

CORPUS = str(Path(sysconfig.get_paths()["stdlib"]) / "email" / "*.py")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory):
    """One tokenizer for every run here, so each run skips training its own."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    Tokenizer.train([p.read_text() for p in expand([CORPUS])], vocab_size=512).save(path)
    return str(path)


def small_run(tokenizer_path, *, mesh=None, data=None, model=None, **train_overrides):
    train_settings = dict(steps=4, batch_size=8, seq_len=32, log_every=2, eval_every=4, eval_batches=1, checkpoint_every=2)
    model_settings = dict(vocab_size=512, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=64, max_seq_len=64)
    return config.from_dict(
        {
            "model": model_settings | (model or {}),
            "train": train_settings | train_overrides,
            "data": dict(source="text", paths=[CORPUS], tokenizer=tokenizer_path) | (data or {}),
            "mesh": mesh or {"data": 1},
        }
    )


def metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_workdir_resumes_and_starts_fresh(tmp_path, tokenizer_path, capsys):
    cfg = small_run(tokenizer_path)
    last = train(cfg, tmp_path)
    assert {"config.toml", "tokenizer.model", "checkpoints", "metrics.jsonl", "loss.png"} <= {p.name for p in tmp_path.iterdir()}
    assert config.load(tmp_path / "config.toml") == cfg
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    logged = metrics(tmp_path)
    assert [m["step"] for m in logged] == [2, 4] and np.isfinite(last["eval_loss"])
    assert {"step", "loss", "learning_rate", "tokens_per_second", "eval_perplexity"} <= set(logged[-1])
    assert "starting at step 0" in capsys.readouterr().out

    longer = config.override(cfg, {"train.steps": 6})
    train(longer, tmp_path)
    assert "resumed from step 4" in capsys.readouterr().out
    assert [m["step"] for m in metrics(tmp_path)] == [2, 4, 6]

    failing = config.override(cfg, {"train.batch_size": 12, "mesh.data": 8})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(TrainingError, match="does not divide over the 8 devices"):
        train(failing, tmp_path, fresh=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # a fresh run that cannot start changes nothing

    smaller_vocab = config.override(cfg, {"model.vocab_size": 400, "data.tokenizer": None})  # needs a new tokenizer
    train(smaller_vocab, tmp_path, fresh=True)
    assert [m["step"] for m in metrics(tmp_path)] == [2, 4] and Tokenizer.load(tmp_path / "tokenizer.model").vocab_size == 400
    (aside,) = (tmp_path / "previous").iterdir()  # the earlier run, whole
    assert {"config.toml", "tokenizer.model", "checkpoints", "metrics.jsonl", "loss.png", "tensorboard"} == {p.name for p in aside.iterdir()}
    assert [m["step"] for m in metrics(aside)] == [2, 4, 6] and config.load(aside / "config.toml") == longer
    assert f"--fresh: the earlier run's files are in {aside}" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loss_falls(tmp_path, tokenizer_path, dtype):
    cfg = small_run(tokenizer_path, steps=30, log_every=5, eval_every=30, learning_rate=1e-2, warmup_steps=5)
    train(config.override(cfg, {"model.dtype": dtype}), tmp_path)
    losses = [m["loss"] for m in metrics(tmp_path)]
    assert losses[-1] < losses[0] - 1.0


@pytest.fixture(scope="module")
def one_device_curve(tmp_path_factory, tokenizer_path):
    """The metrics of the small run on a single device, the reference for the parallel layouts."""
    workdir = tmp_path_factory.mktemp("one_device")
    train(small_run(tokenizer_path), workdir)
    return metrics(workdir)


def assert_same_curve(run, reference):
    np.testing.assert_allclose([m["loss"] for m in run], [m["loss"] for m in reference], rtol=2e-5)
    np.testing.assert_allclose(run[-1]["eval_loss"], reference[-1]["eval_loss"], rtol=2e-5)


@pytest.mark.parametrize("mesh", [{"data": 8}, {"fsdp": 8}, {"data": 4, "tensor": 2}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_sharded_runs_follow_the_single_device_curve(tmp_path, tokenizer_path, one_device_curve, mesh):
    train(small_run(tokenizer_path, mesh=mesh), tmp_path)
    assert_same_curve(metrics(tmp_path), one_device_curve)


def test_pmap_follows_the_single_device_curve(tmp_path, tokenizer_path, one_device_curve):
    train(small_run(tokenizer_path), tmp_path / "pmap", parallel="pmap")
    assert_same_curve(metrics(tmp_path / "pmap"), one_device_curve)
    train(config.override(small_run(tokenizer_path), {"train.steps": 6}), tmp_path / "pmap", parallel="pmap")
    assert [m["step"] for m in metrics(tmp_path / "pmap")] == [2, 4, 6]  # pmap checkpoints resume too


def test_checkpoint_restores_onto_a_different_mesh(tmp_path, tokenizer_path):
    train(small_run(tokenizer_path, mesh={"fsdp": 8}), tmp_path / "resharded")
    train(small_run(tokenizer_path, mesh={"data": 2, "tensor": 4}, steps=6), tmp_path / "resharded")
    train(small_run(tokenizer_path, steps=6), tmp_path / "straight")
    np.testing.assert_allclose(
        [m["loss"] for m in metrics(tmp_path / "resharded")], [m["loss"] for m in metrics(tmp_path / "straight")], rtol=2e-5
    )


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, tokenizer_path, capsys):
    cfg = small_run(tokenizer_path)
    train(cfg, tmp_path)
    latest = tmp_path / "checkpoints" / "4" / "state"
    for data_file in [p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 0]:
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])  # truncated
    train(config.override(cfg, {"train.steps": 6}), tmp_path)
    out = capsys.readouterr().out
    assert "checkpoint 4 is damaged: its file state/" in out and "resumed from step 2" in out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tokenizer_path):
    cfg = small_run(tokenizer_path, steps=8, checkpoint_every=1, log_every=1, learning_rate=1e9, warmup_steps=0, grad_clip=1e9)
    with pytest.raises(TrainingError, match=r"training diverged by step \d+: .* stopping \(the last good checkpoint \(step \d+\) is kept"):
        train(cfg, tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and all(np.isfinite(m["loss"]) for m in metrics(tmp_path))
    for step in steps:  # every checkpoint kept holds finite parameters
        state = Checkpoints(tmp_path / "checkpoints").read_state(step)
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))


def test_bad_setups_are_refused(tmp_path, tokenizer_path):
    cfg = small_run(tokenizer_path, steps=2)
    train(cfg, tmp_path)
    with pytest.raises(TrainingError, match="holds checkpoints of a different model"):
        train(config.override(cfg, {"model.d_model": 64}), tmp_path)
    with pytest.raises(TrainingError, match=r"has 512 tokens but model.vocab_size is 300"):
        train(config.override(cfg, {"model.vocab_size": 300}), tmp_path / "vocab")
    with pytest.raises(TrainingError, match="cannot train a 300-piece tokenizer on this text: its characters and the special tokens alone take [0-9,]+ pieces; raise model.vocab_size$"):
        train(config.override(cfg, {"model.vocab_size": 300, "data.tokenizer": None}), tmp_path / "vocab2")
    with pytest.raises(TrainingError, match=r"train.batch_size=12 \(micro-batches of 12\) does not divide over the 8 devices"):
        train(config.override(cfg, {"train.batch_size": 12, "mesh.data": 8}), tmp_path / "batch")
    (tmp_path / "small.txt").write_text("x = 1\n" * 50)
    with pytest.raises(TrainingError, match="too few for 8 held-out rows and a training batch of 8"):
        train(config.override(cfg, {"data.paths": [str(tmp_path / "small.txt")]}), tmp_path / "small")
    with pytest.raises(TrainingError, match="data.paths: '/nonexistent/\\*.txt' matches no files"):
        train(config.override(cfg, {"data.paths": ["/nonexistent/*.txt"]}), tmp_path / "missing")
    with pytest.raises(TrainingError, match="train.py trains decoder-only language models .* model.kind='encoder'"):
        train(config.override(cfg, {"model.kind": "encoder"}), tmp_path / "encoder")
    np.save(tmp_path / "ids.npy", np.arange(1000, dtype=np.int32))
    with pytest.raises(TrainingError, match="the token data holds id 999, beyond model.vocab_size=512"):
        train(config.override(cfg, {"data.source": "tokens", "data.paths": [str(tmp_path / "ids.npy")]}), tmp_path / "ids")


def test_pretokenised_data_trains_without_a_tokenizer(tmp_path):
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 512, 20_000).astype(np.uint16))
    cfg = config.from_dict(
        {
            "model": dict(vocab_size=512, d_model=32, num_layers=1, num_heads=2, ffn_dim=64, max_seq_len=64),
            "train": dict(steps=2, batch_size=8, seq_len=32, log_every=1, eval_batches=1),
            "data": dict(source="tokens", paths=[str(tmp_path / "ids.npy")], document_end_id=2),
            "mesh": {"data": 1},
        }
    )
    train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "tokenizer.model").exists() and len(metrics(tmp_path / "run")) == 2


def run_script(workdir, cfg_path, *extra, wait=True, devices=4):
    """train.py in a fresh process with `devices` fake CPU devices, sharing the tests' compilation cache."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(cfg_path), "--workdir", str(workdir), *extra]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if wait:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output
        return output
    return process


def test_killed_run_resumes_bit_identically(tmp_path, tokenizer_path):
    cfg = small_run(tokenizer_path, steps=16, checkpoint_every=4, log_every=16, eval_every=16, mesh={"data": -1})
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(config.to_toml(cfg))
    run_script(tmp_path / "straight", cfg_path)

    process = run_script(tmp_path / "killed", cfg_path, wait=False)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert time.time() < deadline and process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up, possibly in the middle of a save
    process.wait()
    assert not any(p.name == "16" for p in checkpoints.iterdir()), "the run finished before it was killed"
    run_script(tmp_path / "killed", cfg_path)

    straight, resumed = (Checkpoints(path / "checkpoints").read_state(16) for path in (tmp_path / "straight", tmp_path / "killed"))
    plain = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(plain(a), plain(b)), resumed, straight)


def two_processes(workdir, cfg_path, port, *flags):
    join = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", *flags]
    return [run_script(workdir, cfg_path, *join, "--process-id", str(i), wait=False, devices=2) for i in range(2)]


def test_a_run_moves_between_process_counts_and_a_signal_stops_every_process(tmp_path, tokenizer_path):
    """1 process to step 2; then 2 processes, stopped by a SIGINT to process 0's host alone (both
    stop after the same step and save it); then 1 process to step 6. The result is an
    uninterrupted run's, each step is logged once, and no checkpoint is judged unreadable."""
    settings = dict(mesh={"data": -1}, checkpoint_every=2, log_every=1, eval_every=6)
    train(small_run(tokenizer_path, steps=6, **settings), tmp_path / "straight")
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(config.to_toml(small_run(tokenizer_path, steps=2, **settings)))
    run_script(tmp_path / "run", cfg_path)

    cfg_path.write_text(config.to_toml(small_run(tokenizer_path, steps=6, **settings)))
    processes = two_processes(tmp_path / "run", cfg_path, 20000 + (os.getpid() + 7) % 10000)
    lines = []
    for line in processes[0].stdout:  # process 0 logs
        lines.append(line)
        if "] 3/6 |" in line:
            processes[0].send_signal(signal.SIGINT)
    outputs = ["".join(lines), processes[1].communicate(timeout=120)[0]]
    processes[0].wait(timeout=60)
    assert [p.returncode for p in processes] == [130, 130], outputs
    assert "4 cpu devices, 2 processes" in outputs[0] and "resumed from step 2" in outputs[0], outputs[0]
    step = Checkpoints(tmp_path / "run" / "checkpoints").all_steps()[-1]
    message = f"interrupted at step {step}; checkpoint {step} holds it. Rerun the same command to resume"
    assert step in (3, 4) and all(message in output and "Traceback" not in output for output in outputs), outputs

    output = run_script(tmp_path / "run", cfg_path)
    assert f"resumed from step {step}" in output and "damaged" not in output
    assert not list((tmp_path / "run" / "checkpoints").glob("unreadable-*"))
    resumed, straight = (Checkpoints(path / "checkpoints").read_state(6) for path in (tmp_path / "run", tmp_path / "straight"))
    for a, b in zip(jax.tree.leaves(resumed["params"]), jax.tree.leaves(straight["params"])):
        # 1 and 2 processes sum gradients in other orders; Adam can magnify that a little in a rare token's row
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    logged = metrics(tmp_path / "run")
    assert [m["step"] for m in logged] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([m["loss"] for m in logged], [m["loss"] for m in metrics(tmp_path / "straight")], rtol=2e-5)


@pytest.mark.parametrize("lost", [1, 0])
def test_losing_a_process_stops_the_other_in_one_line(tmp_path, tokenizer_path, lost):
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(config.to_toml(small_run(tokenizer_path, steps=10_000, checkpoint_every=4, log_every=1, mesh={"data": -1})))
    processes = two_processes(tmp_path / "run", cfg_path, 20000 + (os.getpid() + 13 + lost) % 10000, "--heartbeat", "10")
    survivor = processes[1 - lost]
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 240
    while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert time.time() < deadline and all(p.poll() is None for p in processes), "the run ended before its first checkpoint"
        time.sleep(0.1)
    os.killpg(processes[lost].pid, signal.SIGKILL)  # the whole host is gone: supervisor and worker
    output = survivor.communicate(timeout=120)[0]  # a bound, not a measurement: the heartbeat (10 s) plus the grace
    errors = [line for line in output.splitlines() if "error" in line.lower() or "Traceback" in line or "Check failure" in line]
    assert survivor.returncode == 1, output
    assert len(errors) == 1 and errors[0].startswith(f"train.py: error: another process of this 2-process run is gone; process {1 - lost} of 2 is stopping. Rerun every process to resume from step"), output


MOE = {"num_experts": 8, "top_k": 2, "expert_ffn_dim": 32, "router": "sigmoid", "bias_update_rate": 0.01, "capacity_factor": 1.5}


def test_moe_run_with_experts_across_devices_follows_the_single_device_curve(tmp_path, tokenizer_path):
    train(small_run(tokenizer_path, model={"moe": MOE}), tmp_path / "one")
    train(small_run(tokenizer_path, model={"moe": MOE}, mesh={"data": 2, "expert": 4}), tmp_path / "split")
    one, split = metrics(tmp_path / "one"), metrics(tmp_path / "split")
    assert_same_curve(split, one)
    np.testing.assert_allclose([m["expert_load"] for m in split], [m["expert_load"] for m in one], atol=1e-4)
    assert all(0 <= m["drop_fraction"] < 0.5 and len(m["expert_load"]) == 8 for m in one)


def test_moe_loss_falls_with_load_kept_balanced(tmp_path, tokenizer_path, capsys):
    moe = {"num_experts": 8, "top_k": 2, "expert_ffn_dim": 32, "shared_ffn_dim": 32, "first_dense": 1, "router": "sigmoid", "bias_update_rate": 0.01}
    cfg = small_run(tokenizer_path, model={"moe": moe}, steps=30, log_every=5, eval_every=30, learning_rate=1e-2, warmup_steps=5)
    train(cfg, tmp_path)
    logged = metrics(tmp_path)
    assert logged[-1]["loss"] < logged[0]["loss"] - 1.0
    even = 1 / 8  # the loss-free bias keeps every expert within half of its even share either way
    assert even / 2 < min(logged[-1]["expert_load"]) and max(logged[-1]["expert_load"]) < 1.5 * even
    assert "expert load" in capsys.readouterr().out
