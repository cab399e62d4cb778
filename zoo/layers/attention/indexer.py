"""DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2): which past keys each query attends to.

A few small heads score every visible past token t for a query s,

    I[s, t] = sum_h w[s, h] * relu(q[s, h] . k[t] / sqrt(Di)),    w = x W_w / sqrt(Hi)

with queries from the attention's query latent and one shared key per token (LayerNorm'd,
RoPE on its first dims, half-split), and each query keeps the `top_k` best-scoring
visible tokens. The attention itself then runs only over those. The indexer's keys are
cached beside the attention's own entries, so decoding scores the whole past each step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.attention.projections import Projections
from zoo.layers.norms import LayerNorm
from zoo.layers.rope import RoPE


class LightningIndexer(nnx.Module):
    """Hi heads of size Di scoring past tokens; each query keeps `top_k` of them.

    dim: the model width D; query_dim: the query latent's width (DeepSeek's q_lora_rank).
    `rope` rotates the first dims of each query head and key (None: no positions).
    """

    def __init__(
        self,
        dim: int,
        query_dim: int,
        num_heads: int,
        head_dim: int,
        top_k: int,
        *,
        rope: RoPE | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        make = Projections(dtype, param_dtype, rngs)
        self.q = make.linear(query_dim, (num_heads, head_dim), ("q_lora", "heads", "head_dim"))
        self.k = make.linear(dim, head_dim, ("embed", "head_dim"))
        self.k_norm = LayerNorm(head_dim, eps=1e-6, axis="head_dim", dtype=jnp.float32, param_dtype=param_dtype)
        self.head_weights = make.linear(dim, num_heads, ("embed", "heads"))
        self.rope, self.top_k, self.num_heads, self.head_dim = rope, top_k, num_heads, head_dim

    def keys(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """x [B, T, D] -> the tokens' index keys [B, T, Di] (float32), as the cache stores them."""
        key = self.k_norm(self.k(x))
        return key if self.rope is None else self.rope(key[:, :, None], positions, segment_ids)[:, :, 0]

    def scores(self, x: jax.Array, query_latent: jax.Array, positions: jax.Array, keys: jax.Array, segment_ids=None) -> jax.Array:
        """I [B, T, S] (float32) of queries x [B, T, D] with query latents [B, T, Rq] at
        positions [B, T] against index keys [B, S, Di]."""
        q = self.q(query_latent)
        if self.rope is not None:
            q = self.rope(q, positions, segment_ids)
        logits = jnp.einsum("bthd,bsd->bths", q.astype(jnp.float32), keys.astype(jnp.float32)) * self.head_dim**-0.5
        weights = self.head_weights(x).astype(jnp.float32) * self.num_heads**-0.5  # [B, T, Hi]
        return jnp.einsum("bth,bths->bts", weights, jax.nn.relu(logits))

    def select(self, scores: jax.Array, visible: jax.Array) -> jax.Array:
        """The keys each query keeps: bool [B, T, S], the `top_k` highest visible scores
        (every visible key when fewer are visible)."""
        masked = jnp.where(visible, scores, -jnp.inf)
        _, chosen = jax.lax.top_k(masked, min(self.top_k, scores.shape[-1]))  # [B, T, k]
        picked = jnp.zeros(scores.shape, bool).at[
            jnp.arange(scores.shape[0])[:, None, None], jnp.arange(scores.shape[1])[None, :, None], chosen
        ].set(True)
        return picked & visible
