"""Where every model kind meets tokens: the Embedder (tokens to vectors) and the Head
(vectors to vocabulary logits)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.embedding import Embedding
from zoo.layers.layout import constrain
from zoo.layers.linear import Linear
from zoo.layers.mlp import ACTIVATIONS
from zoo.layers.param import constant, param
from zoo.layers.positions import PositionScheme


class Embedder(nnx.Module):
    """tokens, positions, token_types [B, T] -> [B, T, D]: the [V, D] table's rows, scaled by
    sqrt(D) when `scale`, plus the position scheme's absolute encodings and the token types'
    embeddings (BERT's sentence A / B; type 0 when not given), then `norm` (BLOOM, BERT) if any."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        token_types: int = 0,
        scale: bool = False,
        norm: nnx.Module | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.embedding = Embedding(vocab_size, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.token_type_embedding = (
            Embedding(token_types, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs) if token_types else None
        )
        self.norm = norm
        self.scale = math.sqrt(dim) if scale else None

    def __call__(
        self, tokens: jax.Array, positions: jax.Array, scheme: PositionScheme, token_types: jax.Array | None = None
    ) -> jax.Array:
        x = self.embedding(tokens)
        if self.scale is not None:
            x = x * jnp.asarray(self.scale, x.dtype)
        x = scheme.embed(x, positions)
        if self.token_type_embedding is not None:
            x = x + self.token_type_embedding(jnp.zeros_like(tokens) if token_types is None else token_types)
        if self.norm is not None:
            x = self.norm(x)
        return taps.tap("embedding", constrain(x, ("batch", "length", "embed")))


class MaskedLMHead(nnx.Module):
    """BERT's prediction head: hidden [..., D] -> norm(act(hidden W + b)) before the output
    projection, and `bias` [V] added to the logits after it."""

    def __init__(self, dim: int, vocab_size: int, norm: nnx.Module, *, activation: str, dtype, param_dtype, rngs: nnx.Rngs):
        self.transform = Linear(dim, dim, ("embed", "embed"), bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = norm
        self.bias = param(None, constant(0.0), (vocab_size,), ("vocab",), param_dtype)
        self.activation = activation

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.norm(ACTIVATIONS.get(self.activation)(self.transform(hidden)))


class Head(nnx.Module):
    """hidden [B, T, D] -> logits [B, T, V]: through the masked-LM head if there is one, then
    `unembed` (a [D, V] Linear; None: the embedding table, tied), soft-capped as
    cap * tanh(logits / cap) when `softcap` is set."""

    def __init__(self, unembed: Linear | None, *, mlm: MaskedLMHead | None = None, softcap: float | None = None):
        self.mlm = mlm
        self.unembed = unembed
        self.softcap = softcap

    def __call__(self, hidden: jax.Array, embedding: Embedding) -> jax.Array:
        """embedding: the model's input table, used when the output is tied to it."""
        if self.mlm is not None:
            hidden = self.mlm(hidden)
        out = embedding.attend(hidden) if self.unembed is None else self.unembed(hidden)
        if self.mlm is not None:
            out = out + self.mlm.bias[...].astype(out.dtype)
        if self.softcap is not None:
            out = self.softcap * jnp.tanh(out / self.softcap)
        return taps.tap("logits", constrain(out, ("batch", "length", "vocab")))
