"""The short causal depthwise convolution over time that Mamba-2 and Gated DeltaNet run before their scans."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import constant, normal, param


def causal_conv(
    x: jax.Array, weight: jax.Array, bias: jax.Array | None, segment_ids: jax.Array | None, state: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Per channel c: y[b, t, c] = sum_j weight[j, c] x[b, t - W + 1 + j, c] (+ bias[c]), where an
    input from another segment than token t's (or before the sequence) counts as zero.

    x: [B, T, C]; weight: [W, C]; bias: [C] or None; segment_ids: [B, T] (None: one segment);
    state: [B, W-1, C], the inputs just before x, of the same sequence (a cache; None: zeros).
    Returns (y [B, T, C] in float32, the new state [B, W-1, C]: the last W-1 inputs up to each
    row's last real token, real tokens coming first in a row).
    """
    width, (batch, length, channels) = weight.shape[0], x.shape
    segments = jnp.ones((batch, length), jnp.int32) if segment_ids is None else segment_ids
    history = jnp.zeros((batch, width - 1, channels), x.dtype) if state is None else state.astype(x.dtype)
    # the cached inputs belong to the sequence the new tokens continue; without a cache, to none
    history_segment = segments[:, :1] if state is not None else jnp.full_like(segments[:, :1], -1)
    inputs = jnp.concatenate([history, x], axis=1).astype(jnp.float32)  # [B, W-1+T, C]
    input_segments = jnp.concatenate([jnp.broadcast_to(history_segment, (batch, width - 1)), segments], axis=1)
    y = jnp.zeros((batch, length, channels), jnp.float32)
    for j in range(width):  # W is small (4): one shifted multiply-add per tap
        same = (input_segments[:, j : j + length] == segments)[..., None]
        y = y + jnp.where(same, inputs[:, j : j + length], 0.0) * weight[j].astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    real = jnp.sum(segments != 0, axis=-1)
    new_state = jax.vmap(lambda row, start: jax.lax.dynamic_slice_in_dim(row, start, width - 1, axis=0))(inputs, real)
    return y, new_state.astype(x.dtype)


class ShortConv(nnx.Module):
    """A depthwise causal convolution of `width` taps over `channels` (logical name `axis`), with an
    optional bias: x [B, T, C] -> (y [B, T, C] float32, state [B, W-1, C]); see causal_conv."""

    def __init__(self, channels: int, width: int, *, bias: bool = True, axis: str = "mlp", param_dtype=jnp.float32, rngs: nnx.Rngs):
        if width < 2:
            raise ValueError(f"a short convolution needs at least 2 taps, got width={width}")
        self.weight = param(rngs.params(), normal(width**-0.5), (width, channels), (None, axis), param_dtype)
        self.bias = param(None, constant(0.0), (channels,), (axis,), param_dtype) if bias else None
        self.width = width

    def __call__(self, x: jax.Array, segment_ids: jax.Array | None = None, state: jax.Array | None = None):
        return causal_conv(x, self.weight[...], None if self.bias is None else self.bias[...], segment_ids, state)
