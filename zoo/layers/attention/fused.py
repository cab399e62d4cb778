"""Vendor attention kernels: cuDNN flash attention on NVIDIA GPUs, Pallas splash attention on
TPUs, and "pallas", the Pallas kernels of each backend (zoo.layers.attention.pallas_gpu on GPUs).

Each handles the masks its kernel has built in (causal or not; cuDNN and splash a window;
splash packed segments) when the mask is `aligned`; anything else it hands to the chunked
kernel, saying so once in the log. All match `xla_attention`.
"""

from __future__ import annotations

import jax

from zoo.layers.attention.fallbacks import fallback, unsupported
from zoo.layers.attention.kernels import KERNELS
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.attention.pallas_gpu import gpu_decode_attention, gpu_flash_attention


@KERNELS.register("cudnn")
def cudnn_attention(q, k, v, mask: AttentionMask, *, scale, logit_softcap=None, sinks=None, bias=None):
    """cuDNN flash attention through jax.nn.dot_product_attention; shapes as in xla_attention.

    Takes causal or bidirectional masks with a window; packed segments, soft-capping,
    sinks, position biases, chunked local attention, caches, and what cuDNN refuses (dtype, head size) fall back to chunked.
    """
    options = dict(scale=scale, logit_softcap=logit_softcap, sinks=sinks, bias=bias)
    reason = unsupported(mask, sinks, bias) or (
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
    reason = unsupported(mask, sinks, bias) or (None if length % 128 == 0 else f"length {length} is not a multiple of 128")
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
