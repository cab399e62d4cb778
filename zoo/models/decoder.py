"""Decoder-only language model: embeddings, a scanned stack of causal blocks, logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig
from zoo.layers.attention import KVCache
from zoo.layers.attention.mask import segment_positions
from zoo.layers.embedding import Embedding
from zoo.layers.linear import Linear
from zoo.models.block import Block, BlockGroup, norm
from zoo.models.stack import scan_layers, stack
from zoo.sharding import constrain


class DecoderLM(nnx.Module):
    """tokens [B, T] -> logits [B, T, V], attending causally within each segment.

    The output projection is the embedding table when `tie_embeddings`, else its own
    [D, V] matrix. Post-norm models have no final norm (each block ends with one).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
        self.config = config
        self.embedding = Embedding(config.vocab_size, config.d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        pattern = config.attention.layer_pattern
        if len(pattern) == 1:
            self.layers = stack(lambda r: Block(config, pattern[0], rngs=r), config.num_layers, rngs)
        else:
            self.layers = stack(lambda r: BlockGroup(config, rngs=r), config.num_layers // len(pattern), rngs)
        self.final_norm = None if config.block == "post_norm" else norm(config)
        self.unembed = (
            None
            if config.tie_embeddings
            else Linear(config.d_model, config.vocab_size, ("embed", "vocab"), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        )

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Logits [B, T, V] and the updated cache; see `features` for the arguments."""
        hidden, cache = self.features(tokens, positions, segment_ids, cache)
        return self.logits(hidden), cache

    def features(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """The final hidden states [B, T, D] before the output projection.

        tokens: [B, T] int. segment_ids: [B, T], default all one segment; tokens attend
        only within their segment and 0 marks padding. positions: [B, T], default 0, 1, ...
        within each segment, after what the cache holds. cache: a stacked KVCache from
        `init_cache`, or None.
        """
        batch, length = tokens.shape
        aligned = positions is None and cache is None  # fused kernels may use index-based masks
        if positions is None:
            if cache is not None:
                positions = seen(cache)[:, None] + jnp.arange(length, dtype=jnp.int32)
            elif segment_ids is not None:
                positions = segment_positions(segment_ids)
            else:
                positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        x = constrain(self.embedding(tokens), ("batch", "length", "embed"))

        def layer_step(layer: Block | BlockGroup, x, layer_cache):
            return layer(x, positions, segment_ids, layer_cache, aligned=aligned)

        x, cache = scan_layers(
            self.layers, layer_step, x, cache, remat=self.config.remat, unroll=not self.config.scan_layers
        )
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, cache

    def init_cache(self, batch: int, length: int):
        """An empty cache for every layer, stacked like the layers: a KVCache with a leading
        layer axis, or for a layer pattern of several kinds a tuple of them (one per kind).

        Layers get `length` slots, windowed ones a rolling buffer of `window` slots when
        that is fewer. Reads no parameter values (works on the abstract model).
        """
        dtype = jnp.dtype(self.config.dtype)
        stacked = self.config.num_layers // len(self.config.attention.layer_pattern)

        def for_block(block: Block):
            window = block.attention.window
            rolling = window is not None and window < length
            cache = block.attention.empty_cache(batch, window if rolling else length, dtype, rolling=rolling)
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (stacked, *a.shape)), cache)

        if isinstance(self.layers, BlockGroup):
            return tuple(for_block(block) for block in self.layers.blocks)
        return for_block(self.layers)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, T, D] -> logits [B, T, V]."""
        logits = self.embedding.attend(hidden) if self.unembed is None else self.unembed(hidden)
        return constrain(logits, ("batch", "length", "vocab"))


def seen(cache) -> jax.Array:
    """[B]: how many tokens each row of a model's cache holds (from its first layer)."""
    first = cache[0] if isinstance(cache, tuple) else cache
    return first.end[0]
