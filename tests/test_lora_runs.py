"""LoRA fine-tuning runs: only the adapters train, the base stays as it was, the checkpoint holds the adapters."""

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from test_train_runs import assert_same_curve, metrics, small_run, tokenizer_path  # noqa: F401 (a fixture)
from zoo import config, runs
from zoo.generate import Generator
from zoo.sampling import Sampler
from zoo.train import TrainingError, train
from zoo.train.checkpoint import Checkpoints

LORA = {"train.lora.rank": 4, "train.lora.alpha": 8.0, "train.steps": 20, "train.learning_rate": 1e-2, "train.warmup_steps": 2,
        "train.log_every": 5, "train.eval_every": 10, "train.checkpoint_every": 10, "train.weight_decay": 0.0}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tokenizer_path):
    directory = tmp_path_factory.mktemp("base")
    train(small_run(tokenizer_path, steps=4), directory)
    return directory


def lora_run(tokenizer_path, base_run, **overrides):
    return config.override(small_run(tokenizer_path), LORA | {"train.init_from": str(base_run)} | overrides)


def files(directory: Path) -> dict:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def saved_params(workdir: Path) -> dict:
    checkpoints = Checkpoints(workdir / "checkpoints")
    try:
        return checkpoints.read_state(max(checkpoints.all_steps()))["params"]
    finally:
        checkpoints.close()


def test_only_the_adapters_train_and_the_checkpoint_holds_them_alone(tmp_path, tokenizer_path, base_run, capsys):
    before = files(base_run)
    train(lora_run(tokenizer_path, base_run), tmp_path)
    assert files(base_run) == before  # the base run is read, never written
    assert "4,096 of them LoRA adapters, on a frozen" in capsys.readouterr().out
    losses = [m["loss"] for m in metrics(tmp_path)]
    assert losses[-1] < losses[0] - 0.1

    saved = jax.tree_util.tree_flatten_with_path(saved_params(tmp_path))[0]
    assert saved and all("lora" in jax.tree_util.keystr(path) for path, _ in saved)  # no base weight is saved
    assert sum(np.size(leaf) for _, leaf in saved) == 4096
    run, base = runs.load(tmp_path), runs.load(base_run)
    adapters, frozen = nnx.split_state(run.params, nnx.LoRAParam, ...)
    jax.tree.map(np.testing.assert_array_equal, frozen, base.params)  # the base bit for bit
    assert any(np.abs(np.asarray(b)).max() > 0 for b in jax.tree.leaves(adapters))  # B left zero: the adapters learned

    generator = Generator(run.model, run.params)
    assert len(generator([[5, 6, 7]], max_new_tokens=5, sampler=Sampler(temperature=0))[0].tokens) == 5

    train(config.override(lora_run(tokenizer_path, base_run), {"train.steps": 24}), tmp_path)  # resumes on the same base
    assert "resumed from step 20" in capsys.readouterr().out and [m["step"] for m in metrics(tmp_path)][-1] == 24


def test_a_sharded_lora_run_follows_the_single_device_curve(tmp_path, tokenizer_path, base_run):
    alone = tmp_path / "alone"
    train(lora_run(tokenizer_path, base_run, **{"train.steps": 6}), alone)
    split = config.override(lora_run(tokenizer_path, base_run, **{"train.steps": 6}), {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
    train(split, tmp_path / "split")
    assert_same_curve(metrics(tmp_path / "split"), metrics(alone))
    train(lora_run(tokenizer_path, base_run, **{"train.steps": 6}), tmp_path / "pmap", parallel="pmap")
    assert_same_curve(metrics(tmp_path / "pmap"), metrics(alone))


def test_lora_runs_that_cannot_start_say_why(tmp_path, tokenizer_path, base_run):
    with pytest.raises(config.ConfigError, match=r"train.lora: adapts the weights of a trained run: set train.init_from"):
        config.override(small_run(tokenizer_path), {"train.lora.rank": 4})
    with pytest.raises(TrainingError, match=r"train.lora: the LoRA target 'atention.\*' matches no weight"):
        train(lora_run(tokenizer_path, base_run, **{"train.lora.targets": ["atention.*"]}), tmp_path / "a")
    with pytest.raises(TrainingError, match=r"train.lora: LoRA on .*: rank 64 exceeds the smaller side"):
        train(lora_run(tokenizer_path, base_run, **{"train.lora.rank": 64}), tmp_path / "b")
    first = tmp_path / "first"
    train(lora_run(tokenizer_path, base_run, **{"train.steps": 2, "train.log_every": 1, "train.eval_every": 2}), first)
    with pytest.raises(TrainingError, match=r"is a LoRA run .*; start from a full run, or fold its adapters into one first: python -m zoo.lora merge"):
        train(lora_run(tokenizer_path, first), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("held", ["bfloat16", "nf4"])
def test_adapters_train_on_a_base_held_in_bfloat16_or_quantized(tmp_path, tokenizer_path, base_run, held):
    """(with the adapters' dropout on, too)"""
    train(lora_run(tokenizer_path, base_run, **{"train.lora.base_weights": held, "train.lora.dropout": 0.1}), tmp_path)
    losses = [m["loss"] for m in metrics(tmp_path)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.1
    run = runs.load(tmp_path)  # sampling reads the base as saved
    assert run.config.train.lora.base_weights == held and jax.tree.leaves(run.params)[0].dtype == np.float32
