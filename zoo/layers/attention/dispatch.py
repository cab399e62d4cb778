"""Which kernel runs: availability of a kernel named in a config, and the "auto" choice.

A kernel named explicitly must exist on the backend (`check_available`); "auto" picks,
per call and from static shapes only, the fastest kernel that is correct for the
backend: on NVIDIA GPUs cuDNN, or Pallas's Triton flash kernel for packed segments (the
training step's), splash on TPUs (each falls back to chunked for calls it cannot take),
and on CPUs the plain kernel unless its [T, S] logits would be large.
"""

from __future__ import annotations

import jax

from zoo.layers.attention.chunked import chunked_attention
from zoo.layers.attention.fused import cudnn_attention, splash_attention
from zoo.layers.attention.kernels import KERNELS, xla_attention
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.attention.pallas_gpu import gpu_flash_attention
from zoo.layers.attention.notices import say_once

BACKENDS = {"cudnn": ("gpu",), "pallas": ("gpu", "tpu")}  # kernels that run on some backends only
CPU_LOGITS_LIMIT = 1 << 22  # T x S above which "auto" on CPU takes the chunked kernel


def check_available(kernel: str, backend: str | None = None) -> None:
    """Raises ValueError if `kernel` is unknown or cannot run on `backend` (default: jax's)."""
    KERNELS.get(kernel)
    backend = backend or jax.default_backend()
    allowed = BACKENDS.get(kernel)
    if allowed is not None and backend not in allowed:
        raise ValueError(
            f"attention kernel {kernel!r} needs a {' or '.join(allowed)} backend, but jax is running on {backend}; "
            "use 'auto', 'xla' or 'chunked'"
        )


def auto_choice(backend: str, q, k, mask: AttentionMask):
    """The kernel "auto" runs on `backend` for queries q [B, T, H, Dh] against keys k [B, S, K, Dh] under `mask`."""
    if backend == "gpu":
        return gpu_flash_attention if mask.q_segments is not None else cudnn_attention
    if backend == "tpu":
        return splash_attention
    return chunked_attention if q.shape[1] * k.shape[1] > CPU_LOGITS_LIMIT else xla_attention


@KERNELS.register("auto")
def auto_attention(q, k, v, mask, **options):
    """The fastest correct kernel for this backend and these shapes; each distinct choice is logged once."""
    backend = jax.default_backend()
    kernel = auto_choice(backend, q, k, mask)
    say_once(f"attention: auto picked {kernel.__name__} on {backend}")
    return kernel(q, k, v, mask, **options)
