"""Token embeddings, whose table can also map vectors back to vocabulary logits (tied output)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.lora import LowRank
from zoo.layers.param import fan_in_normal, param


class Embedding(nnx.Module):
    """tokens [B, T] int -> vectors [B, T, D] by table lookup; table: [V, D] (with a LoRA adapter,
    `table_lora`, the table is table + its low-rank update, for lookups and the tied output alike)."""

    def __init__(self, vocab_size: int, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.table = param(rngs.params(), fan_in_normal(dim), (vocab_size, dim), ("vocab", "embed"), param_dtype)
        self.dtype = dtype
        self.table_lora: LowRank | None = None

    def __call__(self, tokens: jax.Array) -> jax.Array:
        vectors = jnp.take(self.table[...], tokens, axis=0).astype(self.dtype)
        if self.table_lora is not None:  # the rows of A, times B
            lora = self.table_lora
            vectors = vectors + lora.scale * jnp.take(lora.a[...], tokens, axis=0).astype(self.dtype) @ lora.b[...].astype(self.dtype)
        return vectors

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits [B, T, V] = x [B, T, D] @ table^T: the tied output projection."""
        x = x.astype(self.dtype)
        logits = jnp.einsum("btd,vd->btv", x, self.table[...].astype(self.dtype))
        if self.table_lora is not None:  # x (A B)^T = (x B^T) A^T
            lora = self.table_lora
            low = jnp.einsum("btd,rd->btr", x, lora.b[...].astype(self.dtype))
            logits = logits + lora.scale * jnp.einsum("btr,vr->btv", low, lora.a[...].astype(self.dtype))
        return logits

