"""A tower of blocks as the models use it: built stacked, run scanned, with per-layer caches and memories.

Layers with one attention kind are stacked Blocks; a pattern of several kinds (e.g.
local, global) is stacked BlockGroups, one period each, so every block keeps its own
static window and cache shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig
from zoo.layers import positions as position_schemes
from zoo.layers.attention.mask import segment_positions
from zoo.layers.positions import PositionScheme
from zoo.models.block import Block, BlockGroup
from zoo.models.stack import scan_layers, stack


def build(
    config: ModelConfig, num_layers: int, *, positions: PositionScheme, causal: bool, cross: bool = False, rngs: nnx.Rngs
) -> nnx.Module:
    """`num_layers` blocks, stacked (their params carry a leading `layers` axis)."""
    pattern = config.attention.layer_pattern
    options = dict(positions=positions, causal=causal, cross=cross)
    if len(pattern) == 1:
        window = config.attention.layer_windows()[0]
        return stack(lambda r: Block(config, window, **options, rngs=r), num_layers, rngs)
    return stack(lambda r: BlockGroup(config, **options, rngs=r), num_layers // len(pattern), rngs)


def scheme(config: ModelConfig, *, causal: bool, rngs: nnx.Rngs) -> PositionScheme:
    """The position scheme of a tower of this model."""
    return position_schemes.build(
        config.position, dim=config.d_model, num_heads=config.num_heads, max_positions=config.max_seq_len,
        causal=causal, rngs=rngs,
    )


def run(layers, config: ModelConfig, x, positions, segment_ids, cache=None, *, memory=None, **options):
    """x [B, T, D] through every layer; returns x and the layers' updated caches (stacked like them).
    options (aligned, global_tokens) go to every block."""

    def step(layer, x, per_layer):
        layer_cache, layer_memory = per_layer
        return layer(x, positions, segment_ids, layer_cache, memory=layer_memory, **options)

    return scan_layers(layers, step, x, (cache, memory), remat=config.remat, unroll=not config.scan_layers)


def _blocks(layers) -> list[Block]:
    return list(layers.blocks) if isinstance(layers, BlockGroup) else [layers]


def _like_layers(layers, per_block: list):
    return tuple(per_block) if isinstance(layers, BlockGroup) else per_block[0]


def empty_caches(layers, config: ModelConfig, batch: int, length: int):
    """Empty self-attention caches stacked like the layers: `length` slots, or a rolling buffer
    of `window` slots for windowed blocks when that is fewer. Reads no parameter values."""
    stacked = jax.tree.leaves(nnx.state(layers))[0].shape[0]
    dtype = jnp.dtype(config.dtype)

    def for_block(block: Block):
        window = block.attention.window
        rolling = window is not None and window < length
        cache = block.attention.empty_cache(batch, window if rolling else length, dtype, rolling=rolling)
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (stacked, *a.shape)), cache)

    return _like_layers(layers, [for_block(block) for block in _blocks(layers)])


def memory_caches(layers, memory: jax.Array, segment_ids: jax.Array | None):
    """Every layer's cross-attention keys/values of an encoder's memory [B, S, D], computed once."""
    graphdef, state = nnx.split(layers)

    def for_layer(layer_state):
        layer = nnx.merge(graphdef, layer_state)
        return _like_layers(layer, [b.cross_attention.memory_cache(memory, segment_ids) for b in _blocks(layer)])

    return jax.vmap(for_layer)(state)


def tokens_seen(cache) -> jax.Array:
    """[B]: how many tokens each row of a tower's cache holds (from its first layer)."""
    first = cache[0] if isinstance(cache, tuple) else cache
    return first.end[0]


def positions_for(tokens: jax.Array, positions, segment_ids, cache) -> tuple[jax.Array, bool]:
    """(positions, aligned): the given positions, else 0, 1, ... within each segment after what
    the cache holds; aligned (see AttentionMask) when they are implied and there is no cache."""
    batch, length = tokens.shape
    if positions is not None:
        return positions, False
    if cache is not None:
        return tokens_seen(cache)[:, None] + jnp.arange(length, dtype=jnp.int32), False
    if segment_ids is not None:
        return segment_positions(segment_ids), True
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length)), True
