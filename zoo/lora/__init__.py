"""LoRA runs: folding adapters into a full run, and Hugging Face PEFT adapters in both directions.

A LoRA run (train.py with [train.lora]) keeps only its adapters; its config's
train.init_from names the base run. `merge_run` writes a full run of base + adapters
folded together; zoo.lora.peft reads and writes PEFT adapter directories.
`python -m zoo.lora merge RUN OUT | export RUN PEFT_DIR | import PEFT_DIR BASE OUT`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
from flax import nnx

from zoo import config as zoo_config
from zoo import runs
from zoo.layers import lora
from zoo.new_run import check_new_run_directory, write_run
from zoo.rundir import RunError


def merged(run: runs.Run) -> tuple[zoo_config.Config, nnx.State]:
    """(the config of the full model, its params) for a loaded LoRA run: each adapter's update added
    to its weight, and train.lora and train.init_from cleared. A run without adapters comes back as it is."""
    if run.model.lora is None:
        return run.config, run.params
    module = run.model.bind(jax.tree.map(lambda x: x, run.params))  # a copy: merging writes into the weights
    lora.merge(module)
    train = dataclasses.replace(run.config.train, lora=None, init_from=None)
    return dataclasses.replace(run.config, train=train), nnx.state(module)


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
