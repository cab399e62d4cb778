"""Position schemes behind one small interface: how positions reach the embeddings, the
queries and keys, or the attention logits.

A scheme is a module with three hooks, each doing nothing unless the scheme uses it:
`embed(x, positions)` adds absolute encodings to the token embeddings, `rope(head_dim)`
gives the rotation attention layers apply to q and k, and `logit_bias()` gives a bias
the attention kernels add to their logits. Each scheme takes its own sizes and settings;
zoo.models.wiring builds them by name from a config.

    none        NoPE (PositionScheme itself)
    rope        RoPE (theta, rotary fraction, scalings: see rope.py)
    sinusoidal  sin/cos absolute encodings added to embeddings (Vaswani et al. 2017)
    learned     a learned absolute table (GPT-2, BERT), max_seq_len positions
    alibi       per-head linear biases -slope * |q - k| (Press et al. 2022)
    relative    T5's bucketed relative bias, one table of buckets x heads shared by all layers
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.layers.attention.bias import LogitBias
from zoo.layers.param import fan_in_normal, param
from zoo.layers.rope import RoPE, RopeScaling


class PositionScheme(nnx.Module):
    """NoPE, and the base of every scheme: each hook does nothing."""

    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """x [B, T, D] at positions [B, T] -> x with absolute positions added."""
        return x

    def rope(self, head_dim: int) -> RoPE | None:
        """The rotation for query/key heads of `head_dim`, or None."""
        return None

    def logit_bias(self) -> LogitBias | None:
        """A bias for the attention logits, or None."""
        return None


class RotaryPositions(PositionScheme):
    """RoPE over the first `fraction` of each head's dims, with base `theta` and an optional scaling."""

    def __init__(self, theta: float = 10_000.0, fraction: float = 1.0, scaling: RopeScaling | None = None):
        self.theta, self.fraction, self.scaling = theta, fraction, scaling

    def rope(self, head_dim: int) -> RoPE:
        return RoPE(int(head_dim * self.fraction), self.theta, self.scaling)


def sinusoids(positions: jax.Array, dim: int) -> jax.Array:
    """[..., dim] encodings of the original Transformer: PE(p, 2i) = sin(p / 10000^(2i/D)),
    PE(p, 2i + 1) = cos(p / 10000^(2i/D))."""
    inv_freq = 1.0 / 10_000 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    angles = positions[..., None].astype(jnp.float32) * inv_freq
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], dim)


class SinusoidalPositions(PositionScheme):
    """Fixed sin/cos encodings of width `dim` added to the embeddings."""

    def __init__(self, dim: int):
        self.dim = dim

    def embed(self, x, positions):
        return x + sinusoids(positions, self.dim).astype(x.dtype)


class LearnedPositions(PositionScheme):
    """A [max_positions, D] table; positions past it are an error when they are known (outside jit)."""

    def __init__(self, max_positions: int, dim: int, *, rngs: nnx.Rngs):
        self.table = param(rngs.params(), fan_in_normal(dim), (max_positions, dim), ("length", "embed"), jnp.float32)
        self.max_positions = max_positions

    def embed(self, x, positions):
        if not isinstance(positions, jax.core.Tracer) and int(np.max(positions)) >= self.max_positions:
            raise ValueError(
                f"position {int(np.max(positions))} is past the learned position table of {self.max_positions} "
                "(model.max_seq_len)"
            )
        return x + jnp.take(self.table[...], positions, axis=0).astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi's per-head slopes: 2^(-8i/n) for n heads when n is a power of two; otherwise those
    of the nearest lower power of two, then every other slope of the next one up."""

    def powers(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    lower = 2 ** math.floor(math.log2(num_heads))
    slopes = powers(lower) + powers(2 * lower)[0::2][: num_heads - lower]
    return np.asarray(slopes, np.float32)


def _alibi(slopes, q_positions, k_positions):
    distance = jnp.abs(q_positions[:, None, :, None] - k_positions[:, None, None, :]).astype(jnp.float32)
    return -slopes[None, :, None, None] * distance


class AlibiPositions(PositionScheme):
    """ALiBi's linear biases for `num_heads` heads."""

    def __init__(self, num_heads: int):
        self.num_heads = num_heads

    def logit_bias(self) -> LogitBias:
        return LogitBias(jnp.asarray(alibi_slopes(self.num_heads)), _alibi)


def relative_bucket(relative: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int) -> jax.Array:
    """T5's bucket of each relative position k - q: exact for small distances, log-spaced up to
    max_distance, and split by sign when bidirectional."""
    bucket = jnp.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket += (relative > 0).astype(relative.dtype) * num_buckets
        distance = jnp.abs(relative)
    else:
        distance = -jnp.minimum(relative, 0)
    exact = num_buckets // 2
    log_spaced = exact + (
        jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    ).astype(relative.dtype)
    return bucket + jnp.where(distance < exact, distance, jnp.minimum(log_spaced, num_buckets - 1))


class RelativePositionBias(PositionScheme):
    """T5's relative position bias: a learned [num_buckets, H] table, one bias shared by every
    layer; buckets are split by direction when `bidirectional` (an encoder)."""

    def __init__(self, num_heads: int, *, num_buckets: int, max_distance: int, bidirectional: bool, rngs: nnx.Rngs):
        self.table = param(rngs.params(), fan_in_normal(1), (num_buckets, num_heads), (None, "heads"), jnp.float32)
        self.bidirectional = bidirectional
        self.num_buckets, self.max_distance = num_buckets, max_distance

    def logit_bias(self) -> LogitBias:
        options = dict(bidirectional=self.bidirectional, num_buckets=self.num_buckets, max_distance=self.max_distance)

        def bias(table, q_positions, k_positions):
            buckets = relative_bucket(k_positions[:, None, :] - q_positions[:, :, None], **options)  # [B, T, S]
            return jnp.moveaxis(jnp.take(table, buckets, axis=0), -1, 1)  # [B, H, T, S]

        return LogitBias(self.table[...], bias)
