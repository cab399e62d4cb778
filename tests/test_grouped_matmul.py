"""Grouped matmuls: megablox's TPU kernel (in Pallas's interpreter) and ragged_dot against a loop
over the groups, values and gradients; which kernel the program calls on each platform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.moe.grouped_matmul import grouped_matmul, megablox_matmul, megablox_tiling

RNG = np.random.default_rng(0)


def per_group(x, w, group_sizes):
    """Each group's rows times its matrix, one group at a time; rows past the groups are zeros."""
    out, start = np.zeros((x.shape[0], w.shape[2])), 0
    for group, size in enumerate(group_sizes):
        out[start : start + size] = x[start : start + size] @ w[group]
        start += size
    return out


@pytest.mark.parametrize("kernel", ["megablox", "ragged_dot"])
@pytest.mark.parametrize("sizes", [(10, 0, 30, 20), (16, 16, 16, 16), (0, 0, 64, 0)])  # an empty group; even; one group
def test_grouped_matmul_is_the_loop_over_groups(kernel, sizes):
    x = jnp.asarray(RNG.normal(size=(64, 128)), jnp.float32)
    w = jnp.asarray(RNG.normal(size=(4, 128, 256)), jnp.float32) / 8
    group_sizes = jnp.asarray(sizes, jnp.int32)
    matmul = (lambda x, w: megablox_matmul(x, w, group_sizes, interpret=True)) if kernel == "megablox" else (
        lambda x, w: grouped_matmul(x, w, group_sizes)
    )
    np.testing.assert_allclose(matmul(x, w), per_group(np.asarray(x), np.asarray(w), sizes), rtol=1e-5, atol=1e-4)
    weights = jnp.asarray(RNG.normal(size=(64, 256)), jnp.float32)
    loss = lambda matmul: lambda x, w: jnp.sum(matmul(x, w) * weights)
    looped = lambda x, w: sum(  # the loop in jax, for its gradients
        jnp.sum(x[start : start + size] @ w[group] * weights[start : start + size])
        for group, (start, size) in enumerate(zip(np.cumsum((0,) + sizes[:-1]), sizes))
    )
    got, want = jax.grad(loss(matmul), argnums=(0, 1))(x, w), jax.grad(looped, argnums=(0, 1))(x, w)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-4)


def test_each_platform_lowers_to_its_kernel():
    """One traced program: megablox's Mosaic kernel when lowered for a TPU, ragged_dot for a GPU."""
    x, w, sizes = jnp.zeros((64, 128), jnp.bfloat16), jnp.zeros((4, 128, 256), jnp.bfloat16), jnp.full((4,), 16, jnp.int32)
    traced = jax.jit(jax.grad(lambda x, w: jnp.sum(grouped_matmul(x, w, sizes)), argnums=(0, 1))).trace(x, w)
    tpu, cuda = (traced.lower(lowering_platforms=(platform,)).as_text() for platform in ("tpu", "cuda"))
    assert "tpu_custom_call" in tpu and "ragged_dot" not in tpu
    assert "ragged_dot" in cuda and "tpu_custom_call" not in cuda


def test_shapes_megablox_cannot_tile_take_ragged_dot():
    assert megablox_tiling(64, 128, 256) == (64, 128, 128) and megablox_tiling(96, 256, 128) == (32, 128, 128)
    assert megablox_tiling(12, 128, 128) is None and megablox_tiling(64, 48, 128) is None
    x, w, sizes = jnp.ones((12, 8)), jnp.ones((2, 8, 4)), jnp.asarray([5, 7], jnp.int32)
    tpu = jax.jit(grouped_matmul).trace(x, w, sizes).lower(lowering_platforms=("tpu",)).as_text()
    assert "tpu_custom_call" not in tpu
    np.testing.assert_allclose(grouped_matmul(x, w, sizes), np.full((12, 4), 8.0))
