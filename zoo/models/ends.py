"""Where every model kind meets tokens: the input embeddings and the output logits.

Models hold `config`, `embedding` (the [V, D] table), `token_type_embedding` and
`embedding_norm` (or None), `mlm_head` (or None) and `unembed` (the [D, V] output
matrix, or None when the table is tied); these functions use them the same way in
decoders, encoders and encoder-decoders.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig
from zoo.layers.embedding import Embedding
from zoo.layers.linear import Linear
from zoo.layers.mlp import ACTIVATIONS
from zoo.layers.param import constant, param
from zoo.layers.positions import PositionScheme
from zoo.models.block import norm
from zoo.layers.layout import constrain


def embedding(config: ModelConfig, rngs: nnx.Rngs) -> Embedding:
    dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
    return Embedding(config.vocab_size, config.d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def embedding_norm(config: ModelConfig) -> nnx.Module | None:
    """The norm right after the embeddings (BLOOM, BERT), or None."""
    return norm(config) if config.embedding_norm else None


def token_type_embedding(config: ModelConfig, rngs: nnx.Rngs) -> Embedding | None:
    """The [token_types, D] table of segment embeddings (BERT's sentence A / B), or None."""
    if not config.token_types:
        return None
    dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
    return Embedding(config.token_types, config.d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class MaskedLMHead(nnx.Module):
    """BERT's prediction head: hidden [..., D] -> norm(act(hidden W + b)) before the output
    projection, and `bias` [V] added to the logits after it."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        d = config.d_model
        self.transform = Linear(d, d, ("embed", "embed"), bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = norm(config)
        self.bias = param(None, constant(0.0), (config.vocab_size,), ("vocab",), param_dtype)
        self.activation = config.ffn_activation

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.norm(ACTIVATIONS.get(self.activation)(self.transform(hidden)))


def mlm_head(config: ModelConfig, rngs: nnx.Rngs) -> MaskedLMHead | None:
    return MaskedLMHead(config, rngs) if config.mlm_head else None


def output_projection(config: ModelConfig, rngs: nnx.Rngs) -> Linear | None:
    """The [D, V] output matrix, or None when the embedding table is reused (tied)."""
    if config.tie_embeddings:
        return None
    dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
    return Linear(config.d_model, config.vocab_size, ("embed", "vocab"), dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def attach_inputs(model: nnx.Module, config: ModelConfig, rngs: nnx.Rngs) -> None:
    """Gives `model` its input end: embedding, token_type_embedding and embedding_norm."""
    model.embedding = embedding(config, rngs)
    model.token_type_embedding = token_type_embedding(config, rngs)
    model.embedding_norm = embedding_norm(config)


def attach_outputs(model: nnx.Module, config: ModelConfig, rngs: nnx.Rngs) -> None:
    """Gives `model` its output end: mlm_head and unembed."""
    model.mlm_head = mlm_head(config, rngs)
    model.unembed = output_projection(config, rngs)


def embed(
    model: nnx.Module, tokens: jax.Array, scheme: PositionScheme, positions: jax.Array, token_types: jax.Array | None = None
) -> jax.Array:
    """tokens, positions, token_types [B, T] -> [B, T, D]: looked up, scaled by sqrt(D) when
    `embedding_scale`, given the scheme's absolute positions and the token types' embeddings
    (type 0 when not given), then normed if the model says."""
    config = model.config
    x = model.embedding(tokens)
    if config.embedding_scale:
        x = x * jnp.asarray(math.sqrt(config.d_model), x.dtype)
    x = scheme.embed(x, positions)
    if model.token_type_embedding is not None:
        x = x + model.token_type_embedding(jnp.zeros_like(tokens) if token_types is None else token_types)
    if model.embedding_norm is not None:
        x = model.embedding_norm(x)
    return constrain(x, ("batch", "length", "embed"))


def logits(model: nnx.Module, hidden: jax.Array) -> jax.Array:
    """hidden [B, T, D] -> logits [B, T, V] (through the masked-LM head if there is one),
    soft-capped when `final_logit_softcap` is set."""
    if model.mlm_head is not None:
        hidden = model.mlm_head(hidden)
    out = model.embedding.attend(hidden) if model.unembed is None else model.unembed(hidden)
    if model.mlm_head is not None:
        out = out + model.mlm_head.bias[...].astype(out.dtype)
    cap = model.config.final_logit_softcap
    if cap is not None:
        out = cap * jnp.tanh(out / cap)
    return constrain(out, ("batch", "length", "vocab"))
