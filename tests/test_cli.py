"""train.py's command line: bad flags get a clear message and exit status 2; --help, --print-config,
--dry-run, and the summary line at the end of a run."""

import importlib.util
import re
import sysconfig
import tomllib
from pathlib import Path

import jax
import pytest

from zoo import config, stats
from zoo.models import build

ROOT = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "model.num_layers=many"], "model.num_layers: expected an integer, got 'many'"),
        (["--set", "model.num_layer=2"], "model.num_layer: unknown key (did you mean 'num_layers'?)"),
        (["--config", "nonexistent"], "no config file 'nonexistent'"),
        (["--coordinator", "127.0.0.1:1234"], "a coordinator needs the number of processes and this process's id too"),
        (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "process id 2 is not in [0, 2)"),
        (["--parallel", "shard_map"], "invalid choice: 'shard_map'"),
        (["--heartbeat", "1"], "argument --heartbeat: must be from 2 to 3600 seconds, got 1"),
        (["--heartbeat", "10s"], "argument --heartbeat: expected whole seconds, got '10s'"),
    ],
)
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        load_script("train").main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_flags_stop_a_dry_run_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        load_script("train").main(["--dry-run", "--set", "train.batch_size=12", "--set", "mesh.data=8"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and "does not divide over the 8 devices" in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_help_lists_the_configs_and_points_to_the_reference(capsys):
    with pytest.raises(SystemExit) as exit:
        load_script("train").main(["--help"])
    assert exit.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--print-config" in out and "--dry-run" in out
    assert all(path.stem in out for path in config.CONFIG_DIR.glob("*.toml")) and "moe-tiny" in out
    assert 'README.md, section "Configs"' in out


def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = ["model.num_layers=3", "train.steps=7"]
    assert load_script("train").main(["--config", "moe-tiny", "--print-config", *sum((["--set", o] for o in overrides), [])]) == 0
    out = capsys.readouterr().out
    assert config.from_dict(tomllib.loads(out)) == config.load("moe-tiny", overrides)  # base inherited, --set applied
    assert "base" not in tomllib.loads(out) and not any(tmp_path.iterdir())


def test_dry_run_prints_the_sizes_and_mesh_and_compiles_and_writes_nothing(tmp_path, monkeypatch, capsys):
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **kwargs: compiles.append(event) if "backend_compile" in event else None
    )
    monkeypatch.chdir(tmp_path)
    argv = ["--config", "moe-tiny", "--dry-run", "--set", "mesh.data=2", "--set", "mesh.expert=4", "--set", "train.grad_accumulation=2"]
    assert load_script("train").main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    model = build(config.load("moe-tiny").model)
    assert lines == [
        "dry run: nothing compiled, no data read, nothing written to runs/moe-tiny",
        f"parameters: {stats.total_params(model):,} total, {stats.active_params(model):,} active per token",
        "batch: segment_ids and tokens [16, 129] per step (2 micro-batches of [8, 129]); [16, 129] from this process, "
        "[2, 129] per device; 200 steps of 2,048 tokens",
        "mesh: data=2 fsdp=1 tensor=1 expert=4 | 8 cpu devices, 1 process | jit",
    ]
    assert stats.active_params(model) < stats.total_params(model)
    assert not any(tmp_path.iterdir()) and not compiles


def test_a_finished_run_ends_with_one_summary_line(tmp_path, monkeypatch, capsys):
    """The run of test_readme's workspace (the same programs, so one of the two compiles them), through train.py."""
    monkeypatch.chdir(tmp_path)
    corpus = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
    settings = [
        "model.vocab_size=400", "model.num_layers=1", "model.d_model=64", "model.ffn_dim=128", "train.steps=2",
        "train.batch_size=4", "train.seq_len=32", "train.eval_batches=1", 'data.source="text"', f'data.paths=["{corpus}"]', "mesh.data=1",
    ]
    argv = ["--workdir", "run", *sum((["--set", s] for s in settings), [])]
    assert load_script("train").main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    number, seconds = r"[\d,]+", r"\(\d+\.\d s\)"
    start_up = [  # each phase as it begins, then its outcome; the step bar after
        rf"reading the corpus: {re.escape(corpus)}",
        rf"  ({number}) documents, {number} characters {seconds}",
        r"training a 400-piece tokenizer on (\1) documents",
        rf"  done {seconds}",
        r"tokenising (\1) documents",
        rf"  {number} tokens: {number} rows of 33, {number} of them held out at random for evaluation {seconds}",
    ]
    assert re.match("\n".join(start_up) + "\n", "\n".join(out)), out
    compiling = out.index("compiling the training step")
    assert re.fullmatch(rf"  (compiled|loaded from the compile cache), and ran step 1 {seconds}", out[compiling + 1])
    assert out[compiling + 2].startswith("[####################] 2/2 | loss ")
    assert re.fullmatch(
        r"done: 2 steps \| train loss \d+\.\d{3} \| eval loss \d+\.\d{3} \| 256 tokens seen \| wall time 0:\d\d \| run in run", out[-1]
    ), out[-1]
    assert sum(line.startswith("done: ") for line in out) == 1
    assert load_script("train").main(argv) == 0  # nothing left to run: the losses come from metrics.jsonl
    again = capsys.readouterr().out.splitlines()[-1]
    assert again.startswith("done: 2 steps (resumed from step 2) | ") and again.split(" | ")[1:3] == out[-1].split(" | ")[1:3]
