"""Where every model kind meets tokens: the input embeddings and the output logits.

Models hold `config`, `embedding` (the [V, D] table), `embedding_norm` (or None) and
`unembed` (the [D, V] output matrix, or None when the table is tied); these functions
use them the same way in decoders, encoders and encoder-decoders.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig
from zoo.layers.embedding import Embedding
from zoo.layers.linear import Linear
from zoo.layers.positions import PositionScheme
from zoo.models.block import norm
from zoo.sharding import constrain


def embedding(config: ModelConfig, rngs: nnx.Rngs) -> Embedding:
    dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
    return Embedding(config.vocab_size, config.d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def embedding_norm(config: ModelConfig) -> nnx.Module | None:
    """The norm right after the embeddings (BLOOM, BERT), or None."""
    return norm(config) if config.embedding_norm else None


def output_projection(config: ModelConfig, rngs: nnx.Rngs) -> Linear | None:
    """The [D, V] output matrix, or None when the embedding table is reused (tied)."""
    if config.tie_embeddings:
        return None
    dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
    return Linear(config.d_model, config.vocab_size, ("embed", "vocab"), dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def embed(model: nnx.Module, tokens: jax.Array, scheme: PositionScheme, positions: jax.Array) -> jax.Array:
    """tokens, positions [B, T] -> [B, T, D]: looked up, scaled by sqrt(D) when
    `embedding_scale`, given the scheme's absolute positions, then normed if the model says."""
    config = model.config
    x = model.embedding(tokens)
    if config.embedding_scale:
        x = x * jnp.asarray(math.sqrt(config.d_model), x.dtype)
    x = scheme.embed(x, positions)
    if model.embedding_norm is not None:
        x = model.embedding_norm(x)
    return constrain(x, ("batch", "length", "embed"))


def logits(model: nnx.Module, hidden: jax.Array) -> jax.Array:
    """hidden [B, T, D] -> logits [B, T, V], soft-capped when `final_logit_softcap` is set."""
    out = model.embedding.attend(hidden) if model.unembed is None else model.unembed(hidden)
    cap = model.config.final_logit_softcap
    if cap is not None:
        out = cap * jnp.tanh(out / cap)
    return constrain(out, ("batch", "length", "vocab"))
