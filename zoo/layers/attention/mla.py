"""Multi-head latent attention (MLA), as in DeepSeek-V2 and V3.

Keys and values of every head come from one low-rank latent c = norm(x W_dkv) [r]; a
separate RoPE key [dr] is shared by all heads; queries may pass through their own
low-rank bottleneck. Without a cache the latent is decompressed per head (the naive
form). With a cache only c and the RoPE key are stored, and attention runs in the
absorbed form: the key up-projection is folded into the queries and the value
up-projection into the output, so each step attends to the latent directly (MQA with
one key head of size r + dr and values of size r) and never decompresses it.

With a lightning indexer (DeepSeek Sparse Attention, DeepSeek-V3.2; see indexer.py) each
query attends only to the past keys the indexer picks for it, and the cache keeps the
indexer's key per token beside the latent. The selection is a dense [T, S] mask, which
only the plain kernel takes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.dispatch import check_available
from zoo.layers.attention.indexer import LightningIndexer
from zoo.layers.attention.kernels import KERNELS
from zoo.layers.attention.kv_cache import KVCache
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.attention.projections import Projections
from zoo.layers.rope import RoPE


class MultiHeadLatentAttention(nnx.Module):
    """x: [B, T, D] -> [B, T, D] with H heads of query/key size dn + dr and value size dv.

    kv_lora_rank r: the latent size; q_lora_rank: the query bottleneck (None: a direct
    projection); qk_nope_head_dim dn, qk_rope_head_dim dr, v_head_dim dv (each kept as an
    attribute of that name). Logits are scaled by `scale`, default 1/sqrt(dn + dr)
    (DeepSeek's YaRN multiplies that by mscale^2). `window`, `chunk`: as in GroupedQueryAttention.
    `indexer`: (heads, head size, keys kept per query) of a lightning indexer, which needs the
    query bottleneck. `latent_norm`: the RMSNorm on the latent (DeepSeek's; off, the latent is
    x W_dkv itself, as in models converted from grouped-query attention).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_lora_rank: int,
        qk_nope_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        q_lora_rank: int | None = None,
        rope: RoPE | None = None,
        norm_eps: float = 1e-6,
        logit_softcap: float | None = None,
        window: int | None = None,
        chunk: int | None = None,
        scale: float | None = None,
        indexer: tuple[int, int, int] | None = None,
        latent_norm: bool = True,
        kernel: str = "xla",
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_available(kernel)
        make = Projections(dtype, param_dtype, rngs, norm_eps)
        query_dim = qk_nope_head_dim + qk_rope_head_dim
        if q_lora_rank is None:
            self.q_down, self.q_norm = None, None
            self.q_up = make.linear(dim, (num_heads, query_dim), ("embed", "heads", "head_dim"))
        else:
            self.q_down = make.linear(dim, q_lora_rank, ("embed", "q_lora"))
            self.q_norm = make.norm(q_lora_rank, "q_lora")
            self.q_up = make.linear(q_lora_rank, (num_heads, query_dim), ("q_lora", "heads", "head_dim"))
        self.kv_down = make.linear(dim, kv_lora_rank + qk_rope_head_dim, ("embed", "kv_lora"))
        self.kv_norm = make.norm(kv_lora_rank, "kv_lora") if latent_norm else None
        self.kv_up = make.linear(
            kv_lora_rank, (num_heads, qk_nope_head_dim + v_head_dim), ("kv_lora", "heads", "head_dim")
        )
        self.o = make.output(num_heads, v_head_dim, dim)
        if indexer is not None:
            if q_lora_rank is None:
                raise ValueError("a lightning indexer reads the query latent: it needs q_lora_rank")
            if kernel not in ("auto", "xla"):
                raise ValueError(f"sparse attention's key selection runs on the 'xla' kernel, not {kernel!r}")
            kernel = "xla"
        self.indexer = None if indexer is None else LightningIndexer(
            dim, q_lora_rank, *indexer, rope=rope, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.rope = rope
        self.kv_lora_rank, self.qk_nope_head_dim = kv_lora_rank, qk_nope_head_dim
        self.qk_rope_head_dim, self.v_head_dim = qk_rope_head_dim, v_head_dim
        self.scale = query_dim**-0.5 if scale is None else scale
        self.logit_softcap, self.window, self.kernel, self.dtype = logit_softcap, window, kernel, dtype
        self.chunk = chunk

    def empty_cache(self, batch: int, length: int, dtype=jnp.float32, *, rolling: bool = False) -> KVCache:
        """A cache for this layer: the latent [B, length, r] and the RoPE key [B, length, dr]
        (and the indexer's key [B, length, Di])."""
        shapes = {"latent": (self.kv_lora_rank,), "rope_key": (self.qk_rope_head_dim,)}
        if self.indexer is not None:
            shapes["index_key"] = (self.indexer.head_dim,)
        return KVCache.empty(batch, length, shapes, dtype, rolling=rolling)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None = None,
        *,
        causal: bool = True,
        cache: KVCache | None = None,
        aligned: bool = False,
        global_tokens: jax.Array | None = None,
        bias: LogitBias | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """As SelfAttention.__call__: x [B, T, D]; positions, segment_ids [B, T] -> ([B, T, D], cache)."""
        rank, nope_dim = self.kv_lora_rank, self.qk_nope_head_dim
        taps.tap("attention.input", x)
        query_latent = None if self.q_down is None else self.q_norm(self.q_down(x))
        query = taps.tap("attention.q", self.q_up(x if query_latent is None else query_latent))
        q_nope, q_rope = query[..., :nope_dim], query[..., nope_dim:]
        compressed = self.kv_down(x)
        latent, k_rope = compressed[..., :rank], compressed[..., rank:]
        if self.kv_norm is not None:
            latent = self.kv_norm(latent)
        if self.rope is not None:
            q_rope = self.rope(q_rope, positions, segment_ids)
            k_rope = self.rope(k_rope[:, :, None], positions, segment_ids)[:, :, 0]
        taps.tap("attention.latent", latent), taps.tap("attention.rope_key", k_rope)
        attend = functools.partial(KERNELS.get(taps.kernel(self.kernel)), scale=self.scale, logit_softcap=self.logit_softcap, bias=bias)
        if cache is not None and global_tokens is not None:
            raise ValueError("global tokens need the whole sequence at once; they cannot be used with a cache")
        new = {"latent": latent, "rope_key": k_rope}
        if self.indexer is not None:
            new["index_key"] = self.indexer.keys(x, positions, segment_ids)
        if cache is None:
            mask = AttentionMask(
                positions, positions, segment_ids, segment_ids, causal, self.window, aligned, global_tokens, global_tokens,
                chunk=self.chunk,
            )
            stored = new
        else:
            if segment_ids is None:
                segment_ids = jnp.ones(positions.shape, jnp.int32)
            cache, (stored, key_positions, key_segments) = cache.update(new, positions, segment_ids)
            mask = AttentionMask(
                positions, key_positions, segment_ids, key_segments, causal, self.window, chunk=self.chunk
            )
        if self.indexer is not None:
            scores = self.indexer.scores(x, query_latent, positions, stored["index_key"], segment_ids)
            mask = dataclasses.replace(mask, selected=self.indexer.select(scores, mask.dense()), aligned=False)
        if cache is None:
            out = self._naive(attend, q_nope, q_rope, latent, k_rope, mask)
        else:
            out = self._absorbed(attend, q_nope, q_rope, stored["latent"], stored["rope_key"], mask)
        taps.tap("attention.values", out)
        return taps.tap("attention.output", self.o(out)), cache

    def _naive(self, attend, q_nope, q_rope, latent, k_rope, mask):
        """Keys and values decompressed for every head: MHA over [B, S, H, dn + dr] keys."""
        nope_dim = self.qk_nope_head_dim
        decompressed = self.kv_up(latent)  # [B, S, H, dn + dv]
        k_nope, v = decompressed[..., :nope_dim], decompressed[..., nope_dim:]
        k = jnp.concatenate([k_nope, jnp.broadcast_to(k_rope[:, :, None], (*k_nope.shape[:3], k_rope.shape[-1]))], -1)
        taps.tap("attention.k", k), taps.tap("attention.v", v)
        return attend(jnp.concatenate([q_nope, q_rope], -1), k, v, mask)

    def _absorbed(self, attend, q_nope, q_rope, latent, k_rope, mask):
        """Attention on the latent itself: q_nope W_uk^T as the query, the output through W_uv."""
        nope_dim = self.qk_nope_head_dim
        up = self.kv_up.merged_weight()  # [r, H, dn + dv]
        q_latent = jnp.einsum("bthn,rhn->bthr", q_nope, up[..., :nope_dim])
        q = jnp.concatenate([q_latent, q_rope], axis=-1)  # [B, T, H, r + dr]
        k = jnp.concatenate([latent, k_rope.astype(latent.dtype)], axis=-1)[:, :, None]  # [B, S, 1, r + dr]
        out_latent = attend(q, k, latent[:, :, None], mask)  # [B, T, H, r]
        return jnp.einsum("bthr,rhv->bthv", out_latent, up[..., nope_dim:])
