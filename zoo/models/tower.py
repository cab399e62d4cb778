"""A tower of blocks as the models use it: built stacked, run scanned, with per-layer caches,
memories and MoE statistics.

Layers differ by their LayerSpec (sliding window, dense or MoE feed-forward). A tower is
one or two segments: the `moe.first_dense` leading dense layers, then the rest. Each
segment repeats a period of specs: a period of one is a stack of Blocks, a longer one a
stack of BlockGroups, so every block keeps its own static window, cache shape and
feed-forward while compile time stays that of one period.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig
from zoo.layers import positions as position_schemes
from zoo.layers.attention import KVCache
from zoo.layers.attention.mask import segment_positions
from zoo.layers.moe import balance
from zoo.layers.positions import PositionScheme
from zoo.models.block import Block, BlockGroup, LayerSpec
from zoo.models.stack import scan_layers, stack


def layer_specs(config: ModelConfig, num_layers: int) -> list[LayerSpec]:
    """Each layer's window (from attention.layer_pattern) and feed-forward kind (from moe)."""
    windows, moe = config.attention.layer_windows(), config.moe
    return [
        LayerSpec(
            windows[index % len(windows)],
            moe is not None and index >= moe.first_dense and (index - moe.first_dense) % moe.every == 0,
        )
        for index in range(num_layers)
    ]


def period(specs: Sequence[LayerSpec]) -> tuple[LayerSpec, ...]:
    """The shortest run of specs that `specs` repeats."""
    for length in range(1, len(specs) + 1):
        if len(specs) % length == 0 and all(spec == specs[i % length] for i, spec in enumerate(specs)):
            return tuple(specs[:length])
    raise AssertionError("unreachable: the whole sequence is a period")


def _parts(config: ModelConfig, num_layers: int) -> list[list[LayerSpec]]:
    """The layer specs of each segment: the first dense layers (if any), then the rest."""
    specs = layer_specs(config, num_layers)
    first = config.moe.first_dense if config.moe is not None else 0
    return [specs[:first], specs[first:]] if first else [specs]


def layer_locations(config: ModelConfig, num_layers: int) -> list[tuple[int, int | None, int]]:
    """Where each layer's params live: (segment index, block index within a BlockGroup or None
    for a plain stacked Block, index along the segment's stacked `layers` axis)."""
    locations = []
    for segment, part in enumerate(_parts(config, num_layers)):
        width = len(period(part))
        locations += [(segment, None if width == 1 else i % width, i // width) for i in range(len(part))]
    return locations


def build(
    config: ModelConfig, num_layers: int, *, positions: PositionScheme, causal: bool, cross: bool = False, rngs: nnx.Rngs
) -> tuple[nnx.Module, ...]:
    """The tower's segments (see the module doc), each stacked: params carry a leading `layers` axis."""
    options = dict(positions=positions, causal=causal, cross=cross)
    segments = []
    for part in _parts(config, num_layers):
        unit = period(part)
        if len(unit) == 1:
            make = lambda r, spec=unit[0]: Block(config, spec, **options, rngs=r)
        else:
            make = lambda r, unit=unit: BlockGroup(config, unit, **options, rngs=r)
        segments.append(stack(make, len(part) // len(unit), rngs))
    return tuple(segments)


def scheme(config: ModelConfig, *, causal: bool, rngs: nnx.Rngs) -> PositionScheme:
    """The position scheme of a tower of this model."""
    return position_schemes.build(
        config.position, dim=config.d_model, num_heads=config.num_heads, max_positions=config.max_seq_len,
        causal=causal, rngs=rngs,
    )


def _count(segment: nnx.Module) -> int:
    return jax.tree.leaves(nnx.state(segment))[0].shape[0]


def run(segments, config: ModelConfig, x, positions, segment_ids, cache=None, *, memory=None, noise_key=None, **options):
    """x [B, T, D] through every layer. cache, memory: tuples with one entry per segment (or None).
    noise_key: randomness for noisy routers (one key per layer is derived from it). options
    (aligned, global_tokens, bias) go to every block.

    Returns x, the updated caches (a tuple like `cache`, or None), and per segment its MoE
    aux stacked over its layers (an empty dict where it has none).
    """
    caches, auxes = [], []
    for index, segment in enumerate(segments):
        keys = None if noise_key is None else jax.random.split(jax.random.fold_in(noise_key, index), _count(segment))
        per_layer = (None if cache is None else cache[index], None if memory is None else memory[index], keys)

        def step(layer, x, inputs):
            layer_cache, layer_memory, key = inputs
            x, layer_cache, aux = layer(
                x, positions, segment_ids, layer_cache, memory=layer_memory, noise_key=key, **options
            )
            return x, (layer_cache, aux)

        x, (segment_cache, aux) = scan_layers(segment, step, x, per_layer, remat=config.remat, unroll=not config.scan_layers)
        caches.append(segment_cache)
        auxes.append(aux)
    return x, None if cache is None else tuple(caches), tuple(auxes)


def _blocks(unit) -> list[Block]:
    return list(unit.blocks) if isinstance(unit, BlockGroup) else [unit]


def _like_unit(unit, per_block: list):
    return tuple(per_block) if isinstance(unit, BlockGroup) else per_block[0]


def empty_caches(segments, config: ModelConfig, batch: int, length: int) -> tuple:
    """Empty self-attention caches, one entry per segment stacked like its layers: `length` slots,
    or a rolling buffer of `window` slots for windowed blocks when that is fewer."""
    dtype = jnp.dtype(config.dtype)

    def for_segment(segment):
        def for_block(block: Block):
            window = block.attention.window
            rolling = window is not None and window < length
            cache = block.attention.empty_cache(batch, window if rolling else length, dtype, rolling=rolling)
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (_count(segment), *a.shape)), cache)

        return _like_unit(segment, [for_block(block) for block in _blocks(segment)])

    return tuple(for_segment(segment) for segment in segments)


def memory_caches(segments, memory: jax.Array, segment_ids: jax.Array | None) -> tuple:
    """Every layer's cross-attention keys/values of an encoder's memory [B, S, D], computed once."""

    def for_segment(segment):
        graphdef, state = nnx.split(segment)

        def for_layer(layer_state):
            unit = nnx.merge(graphdef, layer_state)
            return _like_unit(unit, [b.cross_attention.memory_cache(memory, segment_ids) for b in _blocks(unit)])

        return jax.vmap(for_layer)(state)

    return tuple(for_segment(segment) for segment in segments)


def tokens_seen(cache) -> jax.Array:
    """[B]: how many tokens each row of a tower's cache holds (from its first layer)."""
    first = jax.tree.leaves(cache, is_leaf=lambda c: isinstance(c, KVCache))[0]
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


def moe_layers(aux) -> list[dict]:
    """The aux dicts of every MoE block (see MoE), each with arrays stacked over its layers."""
    found = []

    def visit(node):
        if isinstance(node, dict) and "load" in node:
            found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, (tuple, list)):
            for value in node:
                visit(value)

    visit(aux)
    return found


def balance_routers(segments, aux, rate: float) -> None:
    """Moves each balancing router's bias by one loss-free update from its layers' loads in `aux`
    (the aux tower.run returned for these segments, possibly summed over several batches)."""
    for segment, segment_aux in zip(segments, aux):
        units = segment.blocks if isinstance(segment, BlockGroup) else None
        entries = segment_aux.items() if units is not None else ([(None, segment_aux)] if segment_aux else [])
        for index, block_aux in entries:
            router = (units[index] if units is not None else segment).ffn.router
            if router.bias is not None:
                router.bias[...] = balance(router.bias[...], block_aux["load"], rate)
