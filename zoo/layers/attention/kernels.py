"""Attention kernels: softmax(q k^T * scale) v under a mask, one function per backend.

Every kernel has the signature of `xla_attention` and is registered in KERNELS under the
name a config uses (`model.attention.kernel`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers import taps
from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.mask import AttentionMask
from zoo.registry import Registry

KERNELS: Registry = Registry("attention kernel")


def softcap(logits: jax.Array, cap: float | None) -> jax.Array:
    """cap * tanh(logits / cap), which bounds logits to (-cap, cap); identity when cap is None."""
    return logits if cap is None else cap * jnp.tanh(logits / cap)


@KERNELS.register("xla")
def xla_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: AttentionMask,
    *,
    scale: float,
    logit_softcap: float | None = None,
    sinks: jax.Array | None = None,
    bias: LogitBias | None = None,
) -> jax.Array:
    """The plain reference kernel, materialising all logits.

    q: [B, T, H, Dh]; k: [B, S, K, Dh]; v: [B, S, K, Dv] with H a multiple of K (query
    head h uses key/value head h // (H / K)); returns [B, T, H, Dv]. Logits are
    softcap(q k^T * scale) + bias(positions), softmax in float32. `sinks` [H]: one more
    logit per head in each softmax, with no value (it only absorbs probability). A query
    that sees no key gets the mean of all values.
    """
    batch, length, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) * scale
    logits = softcap(logits, logit_softcap)
    if bias is not None:
        logits = logits + bias(mask.q_positions, mask.k_positions).reshape(logits.shape)
    taps.tap("attention.scores", logits.reshape(batch, heads, length, k.shape[1]))
    visible = mask.dense()[:, None, None]  # [B, 1, 1, T, S]
    logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    if sinks is not None:
        sink = jnp.broadcast_to(sinks.astype(jnp.float32).reshape(kv_heads, -1, 1, 1), (batch, *logits.shape[1:4], 1))
        weights = jax.nn.softmax(jnp.concatenate([logits, sink], axis=-1), axis=-1)[..., :-1]
    else:
        weights = jax.nn.softmax(logits, axis=-1)
    taps.tap("attention.weights", weights.reshape(batch, heads, length, k.shape[1]))
    out = jnp.einsum("bkgts,bskd->btkgd", weights.astype(v.dtype), v)
    return out.reshape(batch, length, heads, v.shape[-1])
