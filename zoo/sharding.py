"""The device mesh, and parameters laid out on it by their logical axis names.

The rules table (`RULES`) and `partition_spec` live in zoo.layers.layout, with
`constrain`, which pins activations under the mesh jax has set: run a model sharded
with `with jax.set_mesh(mesh):` around the jitted calls.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoo.layers.layout import RULES, Rules, partition_spec
from zoo.layers.param import logical_axes

MESH_AXES = ("data", "fsdp", "tensor", "expert")
BATCH_AXES = tuple(dict(RULES)["batch"])  # the mesh axes the batch is split over

__all__ = ["MESH_AXES", "RULES", "Rules", "make_mesh", "partition_spec", "shardings"]


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
