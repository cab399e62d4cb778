"""Cross-attention: queries from a decoder attend to the output of an encoder (its "memory")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention.dispatch import check_available
from zoo.layers.attention.kernels import KERNELS
from zoo.layers.attention.kv_cache import KVCache
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.attention.projections import HeadProjections, Projections


class CrossAttention(HeadProjections):
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
        qk_norm_over: str = "head",
        clip_qkv: float | None = None,
        norm_eps: float = 1e-6,
        logit_softcap: float | None = None,
        scale: float | None = None,
        kernel: str = "xla",
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_available(kernel)
        make = Projections(dtype, param_dtype, rngs, norm_eps)
        super().__init__(
            dim, num_heads, num_kv_heads, head_dim, qkv_bias=qkv_bias, out_bias=out_bias, qk_norm=qk_norm, make=make,
            qk_norm_over=qk_norm_over, clip_qkv=clip_qkv,
        )
        self.logit_softcap, self.kernel = logit_softcap, kernel
        self.scale = head_dim**-0.5 if scale is None else scale

    def memory_cache(self, memory: jax.Array, segment_ids: jax.Array | None = None) -> KVCache:
        """The keys and values of memory [B, S, D] (segments [B, S], default one), as a full cache."""
        k, v = self.keys_values(memory)
        batch, length = memory.shape[:2]
        segment_ids = jnp.ones((batch, length), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
        positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        return KVCache({"k": k, "v": v}, positions, segment_ids, jnp.sum(segment_ids != 0, axis=-1, dtype=jnp.int32))

    def __call__(self, x: jax.Array, memory: KVCache, segment_ids: jax.Array | None = None) -> jax.Array:
        """x: [B, T, D]; memory: from `memory_cache`; segment_ids: [B, T] of x (default one segment).
        Tapped as "cross_attention.*"."""
        with taps.renamed("cross_"):
            taps.tap("attention.input", x)
            q = taps.tap("attention.q", self.queries(x))
            taps.tap("attention.k", memory.entries["k"]), taps.tap("attention.v", memory.entries["v"])
            batch, length = x.shape[:2]
            if segment_ids is None:
                segment_ids = jnp.ones((batch, length), jnp.int32)
            positions = jnp.zeros((batch, length), jnp.int32)
            mask = AttentionMask(positions, memory.positions, segment_ids, memory.segment_ids, causal=False)
            attend = KERNELS.get(taps.kernel(self.kernel))
            out = attend(q, memory.entries["k"], memory.entries["v"], mask, scale=self.scale, logit_softcap=self.logit_softcap)
            taps.tap("attention.values", out)
            return taps.tap("attention.output", self.o(out))
