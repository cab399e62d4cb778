"""Rotary position embedding (RoPE, Su et al. 2021), applied to queries and keys."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def rope_frequencies(rotary_dims: int, theta: float) -> np.ndarray:
    """Inverse frequencies theta^(-2i / R) for i in [0, R/2): one per rotated pair, float32 [R/2]."""
    return (1.0 / theta ** (np.arange(0, rotary_dims, 2, dtype=np.float64) / rotary_dims)).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates the first R = 2 * len(inv_freq) dims of each head of x by angle position * inv_freq.

    x: [B, T, N, Dh]; positions: [B, T] integer. Dims are paired as (i, i + R/2), the
    "rotate half" layout of GPT-NeoX and Llama; dims past R pass through unchanged.
    """
    rotary_dims = 2 * inv_freq.shape[-1]
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, R/2]
    sin, cos = jnp.sin(angles)[..., None, :], jnp.cos(angles)[..., None, :]  # [B, T, 1, R/2]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., : rotary_dims // 2], x32[..., rotary_dims // 2 : rotary_dims]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x32[..., rotary_dims:]], axis=-1)
    return rotated.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class RoPE:
    """RoPE over the first `rotary_dims` of each head with base `theta`: x [B, T, N, Dh] -> same."""

    rotary_dims: int
    theta: float = 10_000.0

    def __post_init__(self):
        if self.rotary_dims < 2 or self.rotary_dims % 2:
            raise ValueError(f"RoPE needs an even number >= 2 of rotary dims, got {self.rotary_dims}")

    def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        return apply_rope(x, positions, jnp.asarray(rope_frequencies(self.rotary_dims, self.theta)))
