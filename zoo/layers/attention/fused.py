"""Vendor attention kernels: cuDNN flash attention, and Pallas's Triton flash and decode
attention on NVIDIA GPUs; Pallas splash attention on TPUs.

Each handles the masks its kernel has built in (causal or not; cuDNN and splash a window;
the Triton kernel and splash packed segments) when the mask is `aligned`; anything else it
hands to the chunked kernel, saying so once in the log. All match `xla_attention`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers.attention.chunked import chunked_attention
from zoo.layers.attention.kernels import KERNELS
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.attention.notices import say_once


def fallback(kernel: str, reason: str, q, k, v, mask, **options):
    """The chunked kernel, for calls a fused kernel cannot take; logged once per kernel and reason."""
    say_once(f"attention: {kernel} cannot take this call ({reason}); using chunked")
    return chunked_attention(q, k, v, mask, **options)


def _unsupported(mask: AttentionMask, sinks, bias) -> str | None:
    if not mask.aligned:
        return "keys are not the queries' own sequence (a cache or explicit positions)"
    if sinks is not None:
        return "attention sinks"
    if bias is not None:
        return "a position bias"
    if mask.q_global is not None:
        return "global tokens"
    if mask.chunk is not None:  # their index-based masks cannot restart chunks at each segment's start
        return "chunked local attention"
    return None


@KERNELS.register("cudnn")
def cudnn_attention(q, k, v, mask: AttentionMask, *, scale, logit_softcap=None, sinks=None, bias=None):
    """cuDNN flash attention through jax.nn.dot_product_attention; shapes as in xla_attention.

    Takes causal or bidirectional masks with a window; packed segments, soft-capping,
    sinks, position biases, chunked local attention, caches, and what cuDNN refuses (dtype, head size) fall back to chunked.
    """
    options = dict(scale=scale, logit_softcap=logit_softcap, sinks=sinks, bias=bias)
    reason = _unsupported(mask, sinks, bias) or (
        "packed segments" if mask.q_segments is not None else "logit soft-capping" if logit_softcap is not None else None
    )
    if reason:
        return fallback("cudnn", reason, q, k, v, mask, **options)
    window = None if mask.window is None else (mask.window - 1, 0 if mask.causal else mask.window - 1)
    try:
        return jax.nn.dot_product_attention(
            q, k, v, scale=scale, is_causal=mask.causal, local_window_size=window, implementation="cudnn"
        )
    except (NotImplementedError, ValueError, RuntimeError) as error:  # cuDNN's own checks at trace time
        return fallback("cudnn", str(error).splitlines()[0], q, k, v, mask, **options)


@KERNELS.register("pallas")
def pallas_attention(q, k, v, mask: AttentionMask, *, interpret: bool = False, **options):
    """The Pallas kernel of this backend: on GPUs Triton flash attention, or decode attention for
    one query a row against a cache; splash attention elsewhere (TPUs; on other backends only in
    Pallas's interpreter, `interpret`)."""
    if jax.default_backend() != "gpu":
        kernel = splash_attention
    else:  # one query against a cache: the decode kernel
        kernel = gpu_decode_attention if q.shape[1] == 1 and not mask.aligned else gpu_flash_attention
    return kernel(q, k, v, mask, interpret=interpret, **options)


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
    reason = _unsupported(mask, sinks, bias) or (
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


def splash_attention(
    q, k, v, mask: AttentionMask, *, scale, logit_softcap=None, sinks=None, bias=None, interpret: bool = False
):
    """Splash attention (jax.experimental.pallas TPU kernels); shapes as in xla_attention.

    Takes causal or bidirectional masks with a window, packed segments, GQA and
    soft-capping, for lengths that are multiples of 128. `interpret` runs the kernel in
    Pallas's interpreter (any backend; how it is tested on CPU).
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    options = dict(scale=scale, logit_softcap=logit_softcap, sinks=sinks, bias=bias)
    batch, length, heads, _ = q.shape
    kv_heads = k.shape[2]
    reason = _unsupported(mask, sinks, bias) or (None if length % 128 == 0 else f"length {length} is not a multiple of 128")
    if reason:
        return fallback("pallas", reason, q, k, v, mask, **options)
    shape = (length, length)
    if mask.window is not None:
        base = masks.LocalMask(shape, (mask.window - 1, 0 if mask.causal else mask.window - 1), offset=0)
    else:
        base = masks.CausalMask(shape) if mask.causal else masks.FullMask(shape)
    kernel = splash.make_splash_mqa_single_device(
        masks.MultiHeadMask([base] * (heads // kv_heads)), attn_logits_soft_cap=logit_softcap, interpret=interpret
    )
    q_segments, k_segments = mask.segments()
    # [B, T, H, D] -> per batch row and kv head: q [G, T, D], k and v [T, D]
    grouped_q = (q * scale).reshape(batch, length, kv_heads, heads // kv_heads, -1).transpose(0, 2, 3, 1, 4)
    per_head = jax.vmap(kernel, in_axes=(0, 1, 1, None))  # over kv heads
    per_row = jax.vmap(per_head, in_axes=(0, 0, 0, 0))  # over batch rows
    out = per_row(grouped_q, k, v, splash.SegmentIds(q=q_segments, kv=k_segments))  # [B, K, G, T, D]
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, length, heads, -1).astype(q.dtype)
