"""Pallas's kernels for NVIDIA GPUs (jax.experimental.pallas.ops.gpu, written in Triton): flash
attention that masks by segment id, for training on packed rows, and decode attention, for one
query a row against a cache. Each hands calls it cannot take to chunked, saying why once."""

from __future__ import annotations

import jax.numpy as jnp

from zoo.layers.attention.fallbacks import fallback, unsupported
from zoo.layers.attention.mask import AttentionMask


DECODE_SPLITS = (16, 8, 4, 2, 1)  # how many parts of the cache the decode kernel reads at once


def decode_tiling(slots: int) -> tuple[int, int] | None:
    """(k_splits, block_k) for a cache of `slots`: the most splits (of 16 at least) that divide it,
    and the largest block of 16 to 128 keys dividing each split; None when none fits."""
    for splits in DECODE_SPLITS:
        part = slots // splits
        if slots % splits == 0 and part >= 16:
            block = next((b for b in (128, 64, 32, 16) if part % b == 0), None)
            if block is not None:
                return splits, block
    return None


def gpu_decode_attention(
    q, k, v, mask: AttentionMask, *, scale, logit_softcap=None, sinks=None, bias=None, interpret: bool = False
):
    """Pallas's GPU decode attention (jax.experimental.pallas.ops.gpu.decode_attention): one query
    per row [B, 1, H, Dh] against a full KVCache's slots [B, S, K, Dh] (shapes as in
    xla_attention; forward only).

    It reads the slots [start, end) of each row: those of the query's segment, which a full
    cache writes one after another, each before the query (KVCache). Windowed (rolling) and
    chunked caches, soft-capping, sinks, biases and values of another width fall back to chunked.
    """
    from jax.experimental.pallas.ops.gpu import decode_attention

    options = dict(scale=scale, logit_softcap=logit_softcap, sinks=sinks, bias=bias)
    batch, length, heads, head_dim = q.shape
    tiling = decode_tiling(k.shape[1])
    reason = (
        "more than one query a row" if length != 1
        else "no cache segments" if mask.k_segments is None
        else "a sliding window or chunks" if mask.window is not None or mask.chunk is not None
        else "sinks, a position bias, soft-capping or global tokens"
        if any(option is not None for option in (sinks, bias, logit_softcap, mask.q_global))
        else "a key selection" if mask.selected is not None
        else f"values of {v.shape[-1]} dims beside queries and keys of {head_dim}" if v.shape[-1] != head_dim
        else f"a cache of {k.shape[1]} slots, not a multiple of 16" if tiling is None
        else None
    )
    if reason:
        return fallback("pallas", reason, q, k, v, mask, **options)
    same = mask.k_segments == mask.q_segments  # [B, S]: the query's segment (its one query's, broadcast)
    start = jnp.argmax(same, axis=1).astype(jnp.int32)
    end = (k.shape[1] - jnp.argmax(same[:, ::-1], axis=1)).astype(jnp.int32)
    splits, block = tiling
    out = decode_attention.gqa(
        q[:, 0], k, v, start, end, sm_scale=scale, block_k=block, k_splits=splits, interpret=interpret
    )
    return out[:, None].astype(q.dtype)


def gpu_flash_attention(
    q, k, v, mask: AttentionMask, *, scale, logit_softcap=None, sinks=None, bias=None, interpret: bool = False
):
    """Pallas's Triton flash attention (jax.experimental.pallas.ops.gpu.attention); shapes as in
    xla_attention.

    Takes causal or bidirectional masks with packed segments (the training step's), for
    lengths that are multiples of 128 and queries, keys and values of one head size; GQA's
    key/value heads are repeated to the query heads. Windows, soft-capping and the rest fall
    back to chunked. `interpret` runs the kernel in Pallas's interpreter (how it is tested on CPU).
    """
    from jax.experimental.pallas.ops.gpu import attention as triton

    options = dict(scale=scale, logit_softcap=logit_softcap, sinks=sinks, bias=bias)
    batch, length, heads, head_dim = q.shape
    reason = unsupported(mask, sinks, bias) or (
        "a sliding window" if mask.window is not None
        else "logit soft-capping" if logit_softcap is not None
        else f"length {length} is not a multiple of 128" if length % 128
        else f"values of {v.shape[-1]} dims beside queries and keys of {head_dim}" if v.shape[-1] != head_dim
        else None
    )
    if reason:
        return fallback("pallas", reason, q, k, v, mask, **options)
    group = heads // k.shape[2]
    k, v = (jnp.repeat(x, group, axis=2) for x in (k, v))
    segments = mask.q_segments  # aligned: the keys' segments are the queries'
    return triton.mha(q, k, v, segments, sm_scale=scale, causal=mask.causal, interpret=interpret).astype(q.dtype)
