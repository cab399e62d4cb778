"""Grouped matmuls: each row of x times its group's matrix, through the kernel each backend has for it.

On TPUs the rows go through megablox's `gmm` (a Pallas kernel with its own backward, `tgmm`
for the weights' gradient); elsewhere through `jax.lax.ragged_dot`, which XLA lowers for
CPUs and GPUs. The choice is made per platform when the program is lowered
(`jax.lax.platform_dependent`), so one traced program carries both. A Mosaic kernel cannot be
split by the compiler, so megablox is carried only where no mesh axis of more than one device
is left to it (outside a mesh, or inside a shard_map manual over every such axis).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers.layout import current_mesh

ROW_TILES = (128, 64, 32, 16, 8)  # megablox's tile over rows: a multiple of 8, dividing M


def megablox_tiling(rows: int, depth: int, width: int) -> tuple[int, int, int] | None:
    """megablox's (rows, depth, width) tiles for x [rows, depth] times [depth, width]: the largest
    of ROW_TILES dividing `rows`, and 128 over depth and width, which must be multiples of it
    (the backward pass swaps them, so each must tile both); None when the shapes do not tile."""
    tile = next((tile for tile in ROW_TILES if rows % tile == 0), None)
    return None if tile is None or depth % 128 or width % 128 else (tile, 128, 128)


def megablox_matmul(x: jax.Array, w: jax.Array, group_sizes: jax.Array, *, interpret: bool = False) -> jax.Array:
    """x [M, K] sorted by group, w [G, K, N], group_sizes [G] (summing to at most M) -> [M, N]
    through megablox's gmm; `interpret` runs it in Pallas's interpreter (any backend). The
    shapes must tile (megablox_tiling)."""
    from jax.experimental.pallas.ops.tpu.megablox import ops

    rows = x.shape[0]
    tiling = megablox_tiling(rows, *w.shape[1:])
    # gmm leaves the rows past the groups unwritten, in its output and in x's gradient: zero both
    grouped = (jnp.arange(rows) < jnp.sum(group_sizes))[:, None]
    out = ops.gmm(jnp.where(grouped, x, 0), w, group_sizes.astype(jnp.int32), x.dtype, tiling, interpret=interpret)
    return jnp.where(grouped, out, 0)


def kernel_placeable() -> bool:
    """Whether a Pallas kernel can run at this point of the program: no mesh axis of more than one
    device is left for the compiler to split it over."""
    mesh = current_mesh()
    return mesh is None or all(size == 1 or name in mesh.manual_axes for name, size in mesh.shape.items())


def grouped_matmul(x: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
    """x [M, K] sorted by group, w [G, K, N], group_sizes [G] -> [M, N]: row r times w[g] for
    the group g that holds it; rows past the groups come back as zeros. megablox on TPUs
    (where the shapes tile, see megablox_tiling, and kernel_placeable), jax.lax.ragged_dot on
    other platforms."""
    ragged = lambda x, w, sizes: jax.lax.ragged_dot(x, w, sizes)
    if megablox_tiling(x.shape[0], *w.shape[1:]) is None or not kernel_placeable():
        return ragged(x, w, group_sizes)
    return jax.lax.platform_dependent(x, w, group_sizes, tpu=megablox_matmul, default=ragged)
