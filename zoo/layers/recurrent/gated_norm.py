"""RMSNorm with a SiLU output gate, the last step of Mamba-2's and Gated DeltaNet's mixers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import constant, param


class GatedRMSNorm(nnx.Module):
    """x, z [..., C] -> [..., C], computed in float32, over groups of `group_size` channels
    (C = dim; one group: the whole of C) with a scale [C]:

        gate first (Mamba-2):  rms_norm(x * silu(z)) * scale
        norm first (Gated DeltaNet, Qwen3-Next):  rms_norm(x) * scale * silu(z)
    """

    def __init__(
        self, dim: int, *, group_size: int | None = None, norm_first: bool = False, eps: float = 1e-6,
        axis: str = "mlp", dtype=jnp.float32, param_dtype=jnp.float32,
    ):
        group_size = dim if group_size is None else group_size
        if group_size < 1 or dim % group_size:
            raise ValueError(f"{dim} channels do not split into groups of {group_size}")
        self.scale = param(None, constant(1.0), (dim,), (axis,), param_dtype)
        self.group_size, self.norm_first, self.eps, self.dtype = group_size, norm_first, eps, dtype

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        x32, gate = x.astype(jnp.float32), jax.nn.silu(z.astype(jnp.float32))
        if not self.norm_first:
            x32 = x32 * gate
        groups = x32.reshape(*x32.shape[:-1], -1, self.group_size)
        normed = groups * jax.lax.rsqrt(jnp.mean(groups * groups, axis=-1, keepdims=True) + self.eps)
        y = normed.reshape(x32.shape) * self.scale[...].astype(jnp.float32)
        return (y * gate if self.norm_first else y).astype(self.dtype)
