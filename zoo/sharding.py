"""Sharding by logical axis names: one rules table maps them onto the mesh axes.

Models name the dimensions of their parameters and key activations (`embed`, `heads`,
`mlp`, `batch`, ...) and never a mesh axis. `RULES` says which mesh axes (`data`,
`fsdp`, `tensor`, `expert`) shard each logical name; names it does not list stay
replicated. A dimension is only sharded when its size divides evenly, and a mesh axis
shards at most one dimension of an array, so every rule set gives a valid layout.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from typing import Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoo.layers.param import logical_axes

MESH_AXES = ("data", "fsdp", "tensor", "expert")

Rules = Sequence[tuple[str, Sequence[str]]]

RULES: Rules = (
    ("batch", ("data", "fsdp", "expert")),
    ("embed", ("fsdp",)),
    ("vocab", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("mlp", ("tensor",)),
    ("experts", ("expert",)),
)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes MESH_AXES over `devices` (default: all); one size may be -1 (the rest).

    Sizes whose product is smaller than the number of devices use the first ones
    (e.g. `{"data": 1}` runs on one device).
    """
    devices = list(jax.devices() if devices is None else devices)
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; allowed: {', '.join(MESH_AXES)}")
    shape = [sizes.get(name, 1) for name in MESH_AXES]
    fixed = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % fixed:
            raise ValueError(f"mesh {dict(sizes)} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // fixed
    if math.prod(shape) > len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, there are {len(devices)}"
        )
    return Mesh(np.asarray(devices[: math.prod(shape)]).reshape(shape), MESH_AXES)


def process_count(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> int:
    """How many processes the run has (1: a single-process run), checking the flags that say so.

    With `coordinator` ("host:port") all three must be given. Without it, clusters that
    jax detects itself (TPU pods, SLURM, Open MPI) count their processes.
    """
    if coordinator is not None:
        if num_processes is None or process_id is None:
            raise ValueError("a coordinator needs the number of processes and this process's id too")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process id {process_id} is not in [0, {num_processes})")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--coordinator {coordinator!r} is not HOST:PORT with a port in 1-65535, e.g. 10.0.0.1:1234")
        return num_processes
    if num_processes is not None or process_id is not None:
        raise ValueError("--num-processes and --process-id need --coordinator HOST:PORT (the address of process 0)")
    env = os.environ
    hosts = len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h])
    return max(hosts, int(env.get("SLURM_NTASKS", "1")), int(env.get("OMPI_COMM_WORLD_SIZE", "1")))


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_seconds: int = 100,
) -> None:
    """Joins a multi-process run (one process per host, see process_count) before any other jax
    call; a single process does nothing. A process silent for `heartbeat_seconds` counts as gone."""
    if process_count(coordinator, num_processes, process_id) == 1:
        return
    timeouts = dict(heartbeat_timeout_seconds=heartbeat_seconds)
    if coordinator is not None:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id, **timeouts)
    else:
        jax.distributed.initialize(**timeouts)


def partition_spec(
    axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules = RULES
) -> PartitionSpec:
    """The PartitionSpec for an array of `shape` whose dims have logical names `axes`."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        chosen = []
        for mesh_axis in table.get(name, ()):
            mesh_size = mesh.shape.get(mesh_axis, 1)
            if mesh_axis in used or mesh_size == 1:
                continue
            if size % (math.prod(mesh.shape[a] for a in chosen) * mesh_size) == 0:
                chosen.append(mesh_axis)
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec)


def shardings(tree, mesh: Mesh, rules: Rules = RULES):
    """`tree` with a NamedSharding in place of each array (concrete or abstract).

    Variables (params, and the optimizer moments that mirror them) are laid out by
    their logical axes; other arrays (step counters, scalars) are replicated.
    """

    def sharding(leaf):
        if isinstance(leaf, nnx.Variable):
            return leaf.replace(NamedSharding(mesh, partition_spec(logical_axes(leaf), leaf.shape, mesh, rules)))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(sharding, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("zoo_mesh", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules = RULES) -> Iterator[None]:
    """Within this context, `constrain` pins activations to the layout the rules give."""
    token = _ACTIVE.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_layout() -> tuple[Mesh, Rules] | None:
    """The (mesh, rules) of the enclosing `activation_sharding`, or None outside one."""
    return _ACTIVE.get()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """x with a sharding constraint from its logical `axes`; unchanged outside `activation_sharding`."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, partition_spec(axes, x.shape, mesh, rules)))
