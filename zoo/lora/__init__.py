"""LoRA runs: folding adapters into a full run, and Hugging Face PEFT adapters in both directions.

A LoRA run (train.py with [train.lora]) keeps only its adapters; its config's
train.init_from names the base run. `merge_run` writes a full run of base + adapters
folded together; zoo.lora.peft reads and writes PEFT adapter directories.
`python -m zoo.lora merge RUN OUT | export RUN PEFT_DIR | import PEFT_DIR BASE OUT`.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Sequence

import jax
from flax import nnx

from zoo import config as zoo_config
from zoo import rundir, runs
from zoo.layers import lora
from zoo.rundir import RunError
from zoo.train.checkpoint import Checkpoints


def merged(run: runs.Run) -> tuple[zoo_config.Config, nnx.State]:
    """(the config of the full model, its params) for a loaded LoRA run: each adapter's update added
    to its weight, and train.lora and train.init_from cleared. A run without adapters comes back as it is."""
    if run.model.lora is None:
        return run.config, run.params
    module = run.model.bind(jax.tree.map(lambda x: x, run.params))  # a copy: merging writes into the weights
    lora.merge(module)
    train = dataclasses.replace(run.config.train, lora=None, init_from=None)
    return dataclasses.replace(run.config, train=train), nnx.state(module)


def check_new_run_directory(out_dir: Path) -> None:
    """RunError unless `out_dir` can become a new run directory."""
    rundir.check_path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir} exists and is not a directory; write into a new directory")
    if rundir.checkpoints_dir(out_dir).exists():
        raise RunError(f"{out_dir} already holds checkpoints; write into a new directory")


def write_run(out_dir: Path, config: zoo_config.Config, params: nnx.State, step: int, copy_from: Sequence[Path]) -> None:
    """A run directory of `params` at checkpoint `step`, with each tokenizer file and the Hugging Face
    family (source.json) of the first of `copy_from` that has it; config.toml last, so the
    directory is a run only once complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (*rundir.TOKENIZER_FILES, rundir.SOURCE):
        found = next((d / name for d in copy_from if (d / name).is_file()), None)
        if found is not None:
            shutil.copyfile(found, out_dir / name)
    checkpoints = Checkpoints(rundir.checkpoints_dir(out_dir))
    checkpoints.save(step, {"params": params})
    checkpoints.close()
    rundir.write_config(out_dir, config)


def merge_run(run_dir: str | Path, out_dir: str | Path) -> zoo_config.Config:
    """Writes the full run of a LoRA run's base with its adapters folded in; returns its config."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_new_run_directory(out_dir)
    run = runs.load(run_dir)
    if run.model.lora is None:
        raise RunError(f"{run_dir} has no LoRA adapters to merge (its config has no [train.lora])")
    config, params = merged(run)
    write_run(out_dir, config, params, run.step, (run_dir, Path(run.config.train.init_from)))
    return config
