"""Attention: the modules and the contract of self-attention (SelfAttention), their caches, masks and
kernels (each registered in KERNELS by name)."""

from zoo.layers.attention.chunked import chunked_attention
from zoo.layers.attention.dispatch import auto_attention, auto_choice, check_available
from zoo.layers.attention.fused import cudnn_attention, pallas_attention, splash_attention
from zoo.layers.attention.gqa import GroupedQueryAttention
from zoo.layers.attention.kernels import KERNELS, softcap, xla_attention
from zoo.layers.attention.kv_cache import KVCache
from zoo.layers.attention.mask import AttentionMask, segment_positions
from zoo.layers.attention.pallas_gpu import gpu_decode_attention, gpu_flash_attention
from zoo.layers.attention.protocol import SelfAttention

__all__ = [
    "AttentionMask", "GroupedQueryAttention", "KERNELS", "KVCache", "SelfAttention", "auto_attention", "auto_choice",
    "check_available", "chunked_attention", "cudnn_attention", "gpu_decode_attention", "gpu_flash_attention",
    "pallas_attention", "segment_positions", "softcap", "splash_attention", "xla_attention",
]
