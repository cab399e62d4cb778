"""A run directory on disk, as train.py (or the Hugging Face import) writes it.

    config.toml       the resolved config
    tokenizer.model   sentencepiece (absent for runs on pre-tokenised data)
    checkpoints/N/    orbax checkpoints by step; `state` holds {params, opt_state, step}
    metrics.jsonl, loss.png
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from zoo import checksums
from zoo import config as zoo_config
from zoo.models import Model, build
from zoo.tokenizer import Tokenizer

CONFIG, TOKENIZER, CHECKPOINTS, METRICS, LOSS_CURVE = "config.toml", "tokenizer.model", "checkpoints", "metrics.jsonl", "loss.png"


GLOB_CHARACTERS = "*?[]\\"  # the checkpoint library matches paths as glob patterns, which these would change


class RunError(ValueError):
    """A run directory that cannot be loaded."""


def check_path(directory: str | Path) -> Path:
    """The absolute path of a run directory, refusing one the checkpoint library would misread."""
    path = Path(directory).absolute()
    bad = sorted({c for c in str(path) if c in GLOB_CHARACTERS})
    if bad:
        raise RunError(
            f"{str(path)!r} holds {' '.join(repr(c) for c in bad)}, which the checkpoint library reads as glob "
            f"patterns; use a path without any of {' '.join(GLOB_CHARACTERS)}"
        )
    return path


@dataclasses.dataclass(frozen=True)
class Run:
    """What a run directory holds for inference: the config, the model, its params, the tokenizer."""

    config: zoo_config.Config
    model: Model
    params: nnx.State
    tokenizer: Tokenizer | None
    step: int
    notes: tuple[str, ...] = ()  # what a user should know: newer checkpoints passed over as damaged


def latest_step(directory: Path) -> int | None:
    steps = [int(p.name) for p in (directory / CHECKPOINTS).glob("*") if p.name.isdigit() and p.is_dir()]
    return max(steps, default=None)


def load(directory: str | Path, *, step: int | None = None, shardings=None) -> Run:
    """The config, tokenizer and params (of the latest checkpoint, or `step`) of a run directory.

    Only the params are read, not the optimizer state. `shardings` (a tree like the
    params of NamedSharding) lays them out over devices; default: the first device.
    """
    directory = check_path(directory)
    if not (directory / CONFIG).is_file():
        raise RunError(f"{directory} is not a run directory: it has no {CONFIG}")
    config = zoo_config.load(directory / CONFIG)
    step, notes = _intact_step(directory, step)
    model = build(config.model)
    target = {"params": model.abstract_params}
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, model.abstract_params)
    restore_args = {"params": jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)}
    manager = ocp.CheckpointManager((directory / CHECKPOINTS).resolve())
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
            ),
        )
    except Exception as error:  # orbax reports a damaged or mismatched checkpoint with many error types
        raise RunError(f"cannot read the params of {directory / CHECKPOINTS / str(step)}: {error}") from None
    finally:
        manager.close()
    tokenizer = Tokenizer.load(directory / TOKENIZER) if (directory / TOKENIZER).is_file() else None
    return Run(config, model, restored.state["params"], tokenizer, step, notes)


def _intact_step(directory: Path, step: int | None) -> tuple[int, tuple[str, ...]]:
    """`step`, or the newest checkpoint whose files match their checksums (one without a manifest
    counts as intact), and a note for each newer one passed over."""
    steps = sorted((int(p.name) for p in (directory / CHECKPOINTS).glob("*") if p.name.isdigit() and p.is_dir()), reverse=True)
    if step is not None:
        steps = [step] if step in steps else []
    if not steps:
        raise RunError(f"{directory / CHECKPOINTS} holds no checkpoint" + ("" if step is None else f" for step {step}"))
    notes = []
    for candidate in steps:
        try:
            damage = checksums.damage(directory / CHECKPOINTS / str(candidate))
        except FileNotFoundError:
            damage = None
        if damage is None:
            return candidate, tuple(f"{note}; using checkpoint {candidate}" for note in notes)
        notes.append(f"checkpoint {candidate} of {directory} is damaged: {damage}")
    raise RunError("; ".join(notes))
