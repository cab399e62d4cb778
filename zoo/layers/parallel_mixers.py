"""Two sequence mixers side by side on one input, their outputs summed (Falcon-H1's layers:
attention and a Mamba-2 mixer in parallel)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.protocol import SelfAttention


class ParallelMixers(nnx.Module):
    """x [B, T, D] -> attention(x) + recurrent(x) [B, T, D].

    Meets SelfAttention itself: its window and chunk are the attention's (the recurrent
    mixer has neither), and its cache is the pair (the attention's cache, the mixer's),
    each made and advanced by its own layer.
    """

    def __init__(self, attention: SelfAttention, recurrent: SelfAttention):
        for name, layer in (("attention", attention), ("recurrent", recurrent)):
            if not isinstance(layer, SelfAttention):
                raise TypeError(f"{name}: {type(layer).__name__} does not meet SelfAttention (window, empty_cache, __call__)")
        if recurrent.window is not None or recurrent.chunk is not None:
            raise ValueError("the recurrent mixer of a parallel pair has no window or chunk; the attention holds them")
        self.attention, self.recurrent = attention, recurrent
        self.window, self.chunk = attention.window, attention.chunk

    def empty_cache(self, batch: int, length: int, dtype=jnp.float32, *, rolling: bool = False) -> tuple:
        """(the attention's empty cache of `length` slots, the mixer's fixed-size states)."""
        return (
            self.attention.empty_cache(batch, length, dtype, rolling=rolling),
            self.recurrent.empty_cache(batch, length, dtype, rolling=rolling),
        )

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None = None,
        *,
        causal: bool = True,
        cache: tuple | None = None,
        aligned: bool = False,
        global_tokens: jax.Array | None = None,
        bias: LogitBias | None = None,
    ) -> tuple[jax.Array, tuple | None]:
        """As SelfAttention.__call__, with cache the pair from empty_cache."""
        attention_cache, recurrent_cache = (None, None) if cache is None else cache
        attended, attention_cache = self.attention(
            x, positions, segment_ids, causal=causal, cache=attention_cache, aligned=aligned,
            global_tokens=global_tokens, bias=bias,
        )
        mixed, recurrent_cache = self.recurrent(x, positions, segment_ids, causal=causal, cache=recurrent_cache, aligned=aligned)
        return attended + mixed, None if cache is None else (attention_cache, recurrent_cache)
