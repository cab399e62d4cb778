"""Token embeddings, whose table can also map vectors back to vocabulary logits (tied output)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import fan_in_normal, param


class Embedding(nnx.Module):
    """tokens [B, T] int -> vectors [B, T, D] by table lookup; table: [V, D]."""

    def __init__(self, vocab_size: int, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.table = param(rngs.params(), fan_in_normal(dim), (vocab_size, dim), ("vocab", "embed"), param_dtype)
        self.dtype = dtype

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.table[...], tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits [B, T, V] = x [B, T, D] @ table^T: the tied output projection."""
        return jnp.einsum("btd,vd->btv", x.astype(self.dtype), self.table[...].astype(self.dtype))

