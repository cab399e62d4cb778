"""Checks a run passes before any work starts (before a tokenizer is trained or a step compiled):
the work directory, the device mesh, the attention kernel, and whether the state fits in memory.

Each raises TrainingError with one line that names the setting, its value and what would do.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import jax
from jax.sharding import Mesh

from zoo import runs
from zoo.config import Config
from zoo.layers.attention import check_available
from zoo.models import Model
from zoo.sharding import make_mesh
from zoo.train.workdir import PREVIOUS, TrainingError

STATE_COPIES = 4  # params, gradients and Adam's two moments, each the size of the params


def check_workdir(workdir: Path) -> None:
    """A usable run directory: a name the checkpoint library takes, not a file."""
    try:
        runs.check_path(workdir)
    except runs.RunError as error:
        raise TrainingError(f"--workdir: {error}") from None
    if workdir.exists() and not workdir.is_dir():
        raise TrainingError(f"--workdir {str(workdir)!r} is a file, not a directory; name a directory (it is created if missing)")
    for name in (runs.CHECKPOINTS, PREVIOUS):
        if (workdir / name).exists() and not (workdir / name).is_dir():
            raise TrainingError(f"{workdir / name} is a file; the run keeps a directory there: move the file away")


def device_mesh(config: Config) -> Mesh:
    """The mesh of `[mesh]` over every device, or TrainingError if the devices cannot hold it."""
    try:
        return make_mesh(dataclasses.asdict(config.mesh))
    except ValueError as error:
        sizes = ", ".join(f"mesh.{k}={v}" for k, v in dataclasses.asdict(config.mesh).items() if v != 1)
        raise TrainingError(f"{sizes}: {error}; set mesh sizes whose product divides the device count") from None


def check_kernel(config: Config) -> None:
    try:
        check_available(config.model.attention.kernel)
    except ValueError as error:
        raise TrainingError(f"model.attention.kernel: {error}") from None


def device_memory(device: jax.Device) -> tuple[int, str] | None:
    """(bytes one device can hold, what they are), or None when unknown. CPU devices share the host's RAM."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"each {device.device_kind}"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    return ram // max(jax.local_device_count(), 1), f"a share of this host's {ram / 2**30:.0f} GiB of RAM per device"


def check_memory(model: Model, *, shards: int) -> None:
    """Refuses a model whose weights, gradients and optimizer moments alone cannot fit on the devices
    when split `shards` ways (activations come on top, so passing says little; failing is certain)."""
    param_bytes = sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(model.abstract_params))
    needed = STATE_COPIES * param_bytes / shards
    available = device_memory(jax.devices()[0])
    if available is not None and needed > available[0]:
        count = sum(math.prod(a.shape) for a in jax.tree.leaves(model.abstract_params))
        raise TrainingError(
            f"the model has {count:,} parameters: its weights, gradients and Adam moments need {needed / 2**30:,.1f} GiB "
            f"per device, more than {available[1]} ({available[0] / 2**30:,.1f} GiB); use a smaller model (model.*) "
            "or split it over more devices (mesh.fsdp, mesh.tensor)"
        )


def memory_plan_warning(config: Config, mesh_sizes: dict[str, int], device: jax.Device) -> str | None:
    """One line when zoo.plan's training terms for this run exceed what `device` holds
    (device_memory), naming the largest term; None when it fits, on CPUs (whose memory is the
    host's, shared) and where the memory is unknown. Plans from shapes: nothing is compiled."""
    from zoo import plan

    available = None if device.platform == "cpu" else device_memory(device)
    if available is None:
        return None
    memory = plan.plan(config, plan.MeshShape({axis: mesh_sizes.get(axis, 1) for axis in plan.MESH_AXES}))
    problem = memory.overflow(available[0])
    return None if problem is None else f"this run may not fit {available[1]}: it {problem}"
