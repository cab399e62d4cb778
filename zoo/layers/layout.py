"""Logical sharding: one rules table maps logical axis names onto mesh axes.

Layers name the dimensions of their parameters and key activations (`embed`, `heads`,
`mlp`, `batch`, ...) and never a mesh axis. `RULES` says which mesh axes (`data`,
`fsdp`, `tensor`, `expert`) shard each logical name; names it does not list stay
replicated. A dimension is only sharded when its size divides evenly, and a mesh axis
shards at most one dimension of an array, so every rule set gives a valid layout.

Activations follow the mesh jax has set, `with jax.set_mesh(mesh):`, read while tracing
through `jax.sharding.get_abstract_mesh()`; jit keys its cache on that mesh, so a
function traced without one is traced again under one, and the other way round.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from jax.sharding import AbstractMesh, Mesh, PartitionSpec

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


def partition_spec(
    axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh | AbstractMesh, rules: Rules = RULES
) -> PartitionSpec:
    """The PartitionSpec for an array of `shape` whose dims have logical names `axes` (one each).

    E.g. ("batch", "embed") on (8, 64) over {data: 4, fsdp: 2} -> P(("data", "fsdp"), None).
    """
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


def current_mesh() -> AbstractMesh | None:
    """The mesh set by `jax.set_mesh` as tracing sees it (an AbstractMesh), or None if none is set."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """x [*shape] pinned to the layout RULES give its logical `axes` on the current mesh.

    Unchanged when no mesh is set. Mesh axes that are manual here (inside a shard_map)
    are left out: the array is already split over them.
    """
    mesh = current_mesh()
    if mesh is None or mesh.are_all_axes_manual:
        return x
    manual = set(mesh.manual_axes)
    rules = tuple((name, tuple(a for a in mesh_axes if a not in manual)) for name, mesh_axes in RULES)
    return jax.lax.with_sharding_constraint(x, partition_spec(axes, x.shape, mesh, rules))
