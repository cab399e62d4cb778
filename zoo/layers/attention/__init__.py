"""Attention: the modules, their caches, masks and kernels."""

from zoo.layers.attention.gqa import GroupedQueryAttention
from zoo.layers.attention.kernels import KERNELS, softcap, xla_attention
from zoo.layers.attention.kv_cache import KVCache
from zoo.layers.attention.mask import AttentionMask

__all__ = ["AttentionMask", "GroupedQueryAttention", "KERNELS", "KVCache", "softcap", "xla_attention"]
