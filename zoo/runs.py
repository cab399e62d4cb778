"""Loading a run directory (its format: zoo/rundir.py) for inference: config, model, params, tokenizer."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from flax import nnx

from zoo import rundir
from zoo.console import first_line
from zoo.layers.quantized import from_storage, storage_shapes
from zoo import config as zoo_config
from zoo.models import Model, build
from zoo.rundir import CHECKPOINTS, CONFIG, TOKENIZER, RunError, check_path  # noqa: F401 (also read from here)
from zoo.tokenizer import TextTokenizer


@dataclasses.dataclass(frozen=True)
class Run:
    """What a run directory holds for inference: the config, the model, its params, the tokenizer."""

    config: zoo_config.Config
    model: Model
    params: nnx.State
    tokenizer: TextTokenizer | None  # a Tokenizer (sentencepiece) or an HFTokenizer (tokenizer.json)
    step: int
    notes: tuple[str, ...] = ()  # what a user should know: newer checkpoints passed over as damaged


def latest_step(directory: Path) -> int | None:
    return next(iter(rundir.checkpoint_steps(directory)), None)


def load(directory: str | Path, *, step: int | None = None, shardings=None) -> Run:
    """The config, tokenizer and params (of the newest usable checkpoint, or `step`) of a run directory.

    Only the params are read, not the optimizer state. A newer checkpoint that is damaged
    (its checksums disagree, or it has none and cannot be read) is passed over, with a
    note in `Run.notes`. `shardings` (a tree like the params of NamedSharding) lays them
    out over devices; default: the first device.
    """
    directory = check_path(directory)
    config = rundir.read_config(directory)
    try:
        tokenizer = rundir.read_tokenizer(directory)
    except RunError as error:
        raise RunError(f"{error}; restore it, or delete it to give prompts as token ids") from None
    try:
        model = build(config.model, config.train.lora)
    except ValueError as error:
        raise RunError(f"{directory / rundir.CONFIG}: train.lora: {error}") from None
    saved, base = model.abstract_params, None
    if model.lora is not None:  # its checkpoints hold the adapters; the base weights are train.init_from's
        if shardings is not None:
            raise RunError(f"{directory} is a LoRA run, which loads onto one device")
        saved = nnx.split_state(model.abstract_params, nnx.LoRAParam, ...)[0]
        base = _base_params(directory, config.train.init_from)
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: device, saved)
    steps = rundir.checkpoint_steps(directory)
    if step is not None:
        steps = [step] if step in steps else []
    if not steps:
        raise RunError(f"{rundir.checkpoints_dir(directory)} holds no checkpoint" + ("" if step is None else f" for step {step}"))
    notes = []
    for candidate in steps:
        damage, verified = rundir.judge(rundir.step_dir(directory, candidate))
        if damage is None:
            try:
                params = _read_params(directory, candidate, saved, shardings)
                params = params if base is None else nnx.merge_state(params, base)
                return Run(config, model, params, tokenizer, candidate, tuple(f"{n}; using checkpoint {candidate}" for n in notes))
            except Mismatch as error:
                raise RunError(
                    f"checkpoint {candidate} of {directory} does not fit its {rundir.CONFIG}: {error}. It was written with "
                    "other model settings, or by a zoo whose parameter names differ; nothing was changed"
                ) from None
            except Exception as error:  # orbax reports a damaged or mismatched checkpoint with many error types
                if verified:
                    raise RunError(f"checkpoint {candidate} of {directory} is intact but cannot be read here: {first_line(error)}") from None
                damage = f"it cannot be read ({type(error).__name__}: {first_line(error)})"
        notes.append(f"checkpoint {candidate} of {directory} is damaged: {damage}")
    raise RunError("; ".join(notes))


class Mismatch(ValueError):
    """A checkpoint whose saved state has other entries or shapes than the run restoring it expects."""


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
    """{path as "a/b/c": (shape, dtype name)} of every array, whatever kind of tree holds it."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {}
    for path, leaf in flat:
        name = "/".join(re.findall(r"[A-Za-z0-9_]+", jax.tree_util.keystr(path)))
        dtype = getattr(leaf, "dtype", None)
        out[name] = (tuple(getattr(leaf, "shape", ())), "key" if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) else str(dtype))
    return out


def describe_mismatch(saved: dict[str, tuple], expected: dict[str, tuple]) -> str | None:
    """The first difference between two {path: (shape, dtype)} tables, or None when they agree on shapes."""
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing:
        return f"it has no {missing[0]}" + (f" (and {len(missing) - 1} more entries)" if len(missing) > 1 else "")
    if extra:
        return f"it has {extra[0]}, which this run does not" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    for name, (shape, dtype) in expected.items():
        if saved[name][0] != shape and dtype != "key":  # a PRNG key is saved as its raw uint32 data
            return f"its {name} has shape {list(saved[name][0])}, this run's has {list(shape)}"
    return None


def check_fits(saved_metadata: Any, abstract: Any, only: str | None = None) -> None:
    """Raises Mismatch when a saved state's entries (orbax's metadata tree; with `only`, those
    under that top-level name) or their shapes differ from `abstract`'s."""
    if saved_metadata is None:
        raise ValueError("its state metadata cannot be read")
    saved = _leaf_shapes(saved_metadata)
    if only is not None:
        saved = {name: entry for name, entry in saved.items() if name.split("/")[0] == only}
    problem = describe_mismatch(saved, _leaf_shapes(abstract))
    if problem:
        raise Mismatch(problem)


def _base_params(directory: Path, base: str) -> nnx.State:
    """The params of a LoRA run's base run (its train.init_from), which must be a full run."""
    try:
        if rundir.read_config(check_path(base)).train.lora is not None:
            raise RunError(f"{base} is itself a LoRA run")
        return load(base).params
    except RunError as error:
        raise RunError(f"{directory} holds LoRA adapters for the run {base}, which cannot be read: {error}") from None


def _read_params(directory: Path, step: int, abstract_params: nnx.State, shardings) -> nnx.State:
    stored = _read_stored(directory, step, storage_shapes(abstract_params), shardings)
    return from_storage(stored, abstract_params)


def _read_stored(directory: Path, step: int, abstract_params: nnx.State, shardings) -> nnx.State:
    target = {"params": abstract_params}
    restore_args = {"params": jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)}
    with quiet_checkpoint_library():
        manager = ocp.CheckpointManager(
            rundir.checkpoints_dir(directory).resolve(), item_handlers={"state": ocp.PyTreeCheckpointHandler()}
        )
        try:
            check_fits(manager.item_metadata(step)["state"], target, only="params")  # a partial restore would leave gaps
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
