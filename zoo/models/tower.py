"""A tower: a position scheme, layers built stacked and run scanned, and a final norm.

Every model kind is one or two towers between an Embedder and a Head. The layers of a
tower form one or two stacks: the `moe.first_dense` leading dense layers, then the rest.
Each stack repeats a period of LayerSpecs: a period of one is a stack of Blocks, a longer
one a stack of BlockGroups, so every block keeps its own static window, cache shape and
feed-forward while compile time stays that of one period.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention import KVCache
from zoo.layers.attention.mask import segment_positions
from zoo.layers.moe import MoE, MoEStats, balance
from zoo.layers.positions import PositionScheme
from zoo.layers.recurrent import RecurrentCache
from zoo.models.block import Block, BlockGroup
from zoo.models.outputs import Features
from zoo.models.stack import scan_layers


class Tower(nnx.Module):
    """x [B, T, D] -> Features through every layer, then `final_norm` (None: post-norm blocks end with their own)."""

    def __init__(
        self,
        stacks: Sequence[nnx.Module],
        position_scheme: PositionScheme,
        final_norm: nnx.Module | None,
        *,
        remat: str = "none",
        unroll: bool = False,
        cache_dtype=jnp.float32,
    ):
        """stacks: one or two stacked Blocks or BlockGroups (see zoo.models.stack.stack), run in
        order; remat: a policy in REMAT_POLICIES; unroll: unroll the layers instead of scanning."""
        *first, last = stacks
        self.position_scheme = position_scheme
        self.first_layers = first[0] if first else None  # moe.first_dense layers, when they differ from the rest
        self.layers = last
        self.final_norm = final_norm
        self.remat, self.unroll, self.cache_dtype = remat, unroll, cache_dtype

    @property
    def stacks(self) -> tuple[nnx.Module, ...]:
        return tuple(stack for stack in (self.first_layers, self.layers) if stack is not None)

    def __call__(
        self, x, positions, segment_ids, cache=None, *, aligned=False, memory=None, global_tokens=None, noise_key=None
    ) -> Features:
        """x [B, T, D]; positions, segment_ids, global_tokens [B, T]; cache: from empty_cache;
        memory: from memory_cache (a cross-attending tower); noise_key: randomness for noisy
        routers (one key per layer is derived from it)."""
        bias = self.position_scheme.logit_bias()
        options = dict(aligned=aligned, global_tokens=global_tokens, bias=bias)
        caches, moe = [], ()
        for index, stack in enumerate(self.stacks):
            keys = None if noise_key is None else jax.random.split(jax.random.fold_in(noise_key, index), _depth(stack))
            per_layer = (None if cache is None else cache[index], None if memory is None else memory[index], keys)

            def step(layer, x, inputs):
                layer_cache, layer_memory, key = inputs
                x, layer_cache, layer_moe = layer(
                    x, positions, segment_ids, layer_cache, memory=layer_memory, noise_key=key, **options
                )
                return x, (layer_cache, layer_moe)

            x, (stack_cache, stack_moe) = scan_layers(stack, step, x, per_layer, remat=self.remat, unroll=self.unroll)
            caches.append(stack_cache)
            moe += stack_moe
        if self.final_norm is not None:
            x = taps.tap("final_norm", self.final_norm(x))
        return Features(x, None if cache is None else tuple(caches), moe)

    def empty_cache(self, batch: int, length: int) -> tuple:
        """Empty self-attention caches, one entry per stack, stacked like its layers: `length`
        slots, or a rolling buffer of `window` (or `chunk`) slots for windowed (chunked) blocks
        when that is fewer, or a recurrent mixer's fixed-size states (each through its layer's
        SelfAttention.empty_cache)."""

        def for_block(block: Block, depth: int):
            reach = block.attention.window or block.attention.chunk  # the most keys a query sees
            rolling = reach is not None and reach < length
            cache = block.attention.empty_cache(batch, reach if rolling else length, self.cache_dtype, rolling=rolling)
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (depth, *a.shape)), cache)

        return tuple(
            _like_unit(stack, [for_block(block, _depth(stack)) for block in _blocks(stack)]) for stack in self.stacks
        )

    def memory_cache(self, memory: jax.Array, segment_ids: jax.Array | None) -> tuple:
        """Every layer's cross-attention keys/values of an encoder's memory [B, S, D], computed once."""

        def for_stack(stack):
            graphdef, state = nnx.split(stack)

            def for_layer(layer_state):
                unit = nnx.merge(graphdef, layer_state)
                return _like_unit(unit, [b.cross_attention.memory_cache(memory, segment_ids) for b in _blocks(unit)])

            return jax.vmap(for_layer)(state)

        return tuple(for_stack(stack) for stack in self.stacks)

    def moe_blocks(self) -> Iterator[Block]:
        """The MoE blocks in the order of Features.moe (each standing for all the layers that repeat it)."""
        for stack in self.stacks:
            yield from (block for block in _blocks(stack) if isinstance(block.ffn, MoE))

    def balance_routers(self, moe: Sequence[MoEStats], rate: float) -> None:
        """Moves each balancing router's bias by one loss-free update from its layers' loads
        (`moe` as this tower's Features.moe, possibly summed over several batches)."""
        for block, stats in zip(self.moe_blocks(), moe, strict=True):
            router = block.ffn.router
            if router.bias is not None:
                router.bias[...] = balance(router.bias[...], stats.load, rate)


def _depth(stack: nnx.Module) -> int:
    return jax.tree.leaves(nnx.state(stack))[0].shape[0]


def _blocks(unit) -> list[Block]:
    return list(unit.blocks) if isinstance(unit, BlockGroup) else [unit]


def _like_unit(unit, per_block: list):
    return tuple(per_block) if isinstance(unit, BlockGroup) else per_block[0]


def tokens_seen(cache) -> jax.Array:
    """[B]: how many tokens each row of a tower's cache holds (from its first layer's KV or recurrent cache)."""
    first = jax.tree.leaves(cache, is_leaf=lambda c: isinstance(c, (KVCache, RecurrentCache)))[0]
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
