"""Building blocks, each usable alone in any JAX program with explicit arguments."""

from zoo.layers.attention import AttentionMask, GroupedQueryAttention, KERNELS, KVCache, xla_attention
from zoo.layers.embedding import Embedding
from zoo.layers.linear import Linear
from zoo.layers.mlp import ACTIVATIONS, FeedForward
from zoo.layers.norms import NORMS, LayerNorm, RMSNorm
from zoo.layers.rope import RoPE, apply_rope, rope_frequencies

__all__ = [
    "ACTIVATIONS", "AttentionMask", "Embedding", "FeedForward", "GroupedQueryAttention", "KERNELS",
    "KVCache", "LayerNorm", "Linear", "NORMS", "RMSNorm", "RoPE", "apply_rope", "rope_frequencies",
    "xla_attention",
]
