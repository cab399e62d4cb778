"""Cross-attention: queries from a decoder attend to the output of an encoder (its "memory")."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.attention.dispatch import check_available
from zoo.layers.attention.kernels import KERNELS
from zoo.layers.attention.kv_cache import KVCache
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.linear import Linear
from zoo.layers.norms import RMSNorm


class CrossAttention(nnx.Module):
    """x [B, T, D] attends to memory [B, S, D] with H query and K key/value heads, without
    positions or causality: a query sees every memory token of its own segment.

    The memory's keys and values depend only on the memory, so they are computed once
    (`memory_cache`) and reused for every decoding step.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool = False,
        out_bias: bool = False,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        logit_softcap: float | None = None,
        scale: float | None = None,
        kernel: str = "xla",
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_available(kernel)
        linear = functools.partial(Linear, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q = linear(dim, (num_heads, head_dim), ("embed", "heads", "head_dim"), bias=qkv_bias)
        self.k = linear(dim, (num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), bias=qkv_bias)
        self.v = linear(dim, (num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), bias=qkv_bias)
        self.o = linear((num_heads, head_dim), dim, ("heads", "head_dim", "embed"), bias=out_bias)
        norm = functools.partial(RMSNorm, head_dim, eps=norm_eps, axis="head_dim", dtype=dtype, param_dtype=param_dtype)
        self.q_norm = norm() if qk_norm else None
        self.k_norm = norm() if qk_norm else None
        self.logit_softcap, self.kernel, self.head_dim = logit_softcap, kernel, head_dim
        self.scale = head_dim**-0.5 if scale is None else scale

    def memory_cache(self, memory: jax.Array, segment_ids: jax.Array | None = None) -> KVCache:
        """The keys and values of memory [B, S, D] (segments [B, S], default one), as a full cache."""
        k, v = self.k(memory), self.v(memory)
        if self.k_norm is not None:
            k = self.k_norm(k)
        batch, length = memory.shape[:2]
        segment_ids = jnp.ones((batch, length), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
        positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        return KVCache({"k": k, "v": v}, positions, segment_ids, jnp.sum(segment_ids != 0, axis=-1, dtype=jnp.int32))

    def __call__(self, x: jax.Array, memory: KVCache, segment_ids: jax.Array | None = None) -> jax.Array:
        """x: [B, T, D]; memory: from `memory_cache`; segment_ids: [B, T] of x (default one segment)."""
        q = self.q(x)
        if self.q_norm is not None:
            q = self.q_norm(q)
        batch, length = x.shape[:2]
        if segment_ids is None:
            segment_ids = jnp.ones((batch, length), jnp.int32)
        positions = jnp.zeros((batch, length), jnp.int32)
        mask = AttentionMask(positions, memory.positions, segment_ids, memory.segment_ids, causal=False)
        attend = KERNELS.get(self.kernel)
        out = attend(q, memory.entries["k"], memory.entries["v"], mask, scale=self.scale, logit_softcap=self.logit_softcap)
        return self.o(out)
