"""A run directory on disk, as train.py (or the Hugging Face import) writes it.

    config.toml       the resolved config
    tokenizer.model   sentencepiece (absent for runs on pre-tokenised data)
    checkpoints/N/    orbax checkpoints by step; `state` holds {params, opt_state, step}
    metrics.jsonl, loss.png
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Iterator

import jax
import orbax.checkpoint as ocp
from flax import nnx

from zoo import checksums
from zoo import config as zoo_config
from zoo.models import Model, build
from zoo.tokenizer import Tokenizer

CONFIG, TOKENIZER, CHECKPOINTS, METRICS, LOSS_CURVE = "config.toml", "tokenizer.model", "checkpoints", "metrics.jsonl", "loss.png"
COMPLETE = "_CHECKPOINT_METADATA"  # the file orbax writes into a checkpoint's directory last


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
    return next(iter(checkpoint_steps(directory)), None)


def load(directory: str | Path, *, step: int | None = None, shardings=None) -> Run:
    """The config, tokenizer and params (of the newest usable checkpoint, or `step`) of a run directory.

    Only the params are read, not the optimizer state. A newer checkpoint that is damaged
    (its checksums disagree, or it has none and cannot be read) is passed over, with a
    note in `Run.notes`. `shardings` (a tree like the params of NamedSharding) lays them
    out over devices; default: the first device.
    """
    directory = check_path(directory)
    config = read_config(directory)
    tokenizer = read_tokenizer(directory)
    model = build(config.model)
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, model.abstract_params)
    steps = checkpoint_steps(directory)
    if step is not None:
        steps = [step] if step in steps else []
    if not steps:
        raise RunError(f"{directory / CHECKPOINTS} holds no checkpoint" + ("" if step is None else f" for step {step}"))
    notes = []
    for candidate in steps:
        try:
            damage = checksums.damage(directory / CHECKPOINTS / str(candidate))
            verified = damage is None
        except FileNotFoundError:
            damage, verified = None, False
        if not (directory / CHECKPOINTS / str(candidate) / COMPLETE).is_file():
            damage = f"it is not a complete checkpoint (no {COMPLETE})"
        if damage is None:
            try:
                params = _read_params(directory, candidate, model, shardings)
                return Run(config, model, params, tokenizer, candidate, tuple(f"{n}; using checkpoint {candidate}" for n in notes))
            except Exception as error:  # orbax reports a damaged or mismatched checkpoint with many error types
                if verified:
                    raise RunError(f"checkpoint {candidate} of {directory} is intact but cannot be read here: {first_line(error)}") from None
                damage = f"it cannot be read ({type(error).__name__}: {first_line(error)})"
        notes.append(f"checkpoint {candidate} of {directory} is damaged: {damage}")
    raise RunError("; ".join(notes))


def checkpoint_steps(directory: Path) -> list[int]:
    """The steps of the checkpoint directories of a run directory, newest first."""
    if not (directory / CHECKPOINTS).is_dir():
        return []
    return sorted((int(p.name) for p in (directory / CHECKPOINTS).iterdir() if p.name.isdigit() and p.is_dir()), reverse=True)


def read_config(directory: Path) -> zoo_config.Config:
    if not (directory / CONFIG).is_file():
        raise RunError(f"{directory} is not a run directory: it has no {CONFIG}")
    try:
        return zoo_config.load(directory / CONFIG)
    except zoo_config.ConfigError as error:
        raise RunError(f"{directory / CONFIG} is damaged or not a zoo config: {error}") from None


def read_tokenizer(directory: Path) -> Tokenizer | None:
    path = directory / TOKENIZER
    if not path.is_file():
        return None
    try:
        return Tokenizer.load(path)
    except ValueError as error:
        raise RunError(f"{error}; restore it, or delete it to give prompts as token ids") from None


def _read_params(directory: Path, step: int, model: Model, shardings) -> nnx.State:
    target = {"params": model.abstract_params}
    restore_args = {"params": jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)}
    with quiet_checkpoint_library():
        manager = ocp.CheckpointManager((directory / CHECKPOINTS).resolve())
        try:
            args = ocp.args.Composite(state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
            return manager.restore(step, args=args).state["params"]
        finally:
            manager.close()


@contextlib.contextmanager
def quiet_checkpoint_library() -> Iterator[None]:
    """Within: orbax's warnings about the checkpoints it reads are not printed (zoo says what matters)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
