"""The contract of a layer's self-attention, the one every sequence mixer meets."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.kv_cache import KVCache


@runtime_checkable
class SelfAttention(Protocol):
    """Every sequence mixer's contract: what a layer calls to mix its tokens, and the cache it keeps.

    GroupedQueryAttention and MultiHeadLatentAttention meet it, their cache a KVCache of past
    tokens' entries; so do the recurrent mixers (zoo.layers.recurrent), their cache a
    RecurrentCache of fixed-size states, and ParallelMixers, a pair of both. The layer that
    holds a mixer only makes its cache through empty_cache and passes it back.
    `isinstance(module, SelfAttention)` checks that these names exist, not their signatures.

    window: each query sees only keys less than `window` positions away (those in
    (q - window, q] when causal); None: no window. chunk: each query sees only keys of its
    own chunk of positions, position // chunk (at most `chunk` keys when causal); None: no chunks.
    """

    window: int | None
    chunk: int | None

    def empty_cache(self, batch: int, length: int, dtype=jnp.float32, *, rolling: bool = False) -> KVCache:
        """A cache of `length` empty slots per row for `batch` rows, its entries in `dtype`.

        rolling: keep only the last `length` tokens (a windowed layer's, of `window` slots, or a
        chunked one's, of `chunk` slots: no query sees past its chunk's start).
        """

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None = None,
        *,
        causal: bool = True,
        cache: KVCache | None = None,
        aligned: bool = False,
        global_tokens: jax.Array | None = None,
        bias: LogitBias | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """x: [B, T, D] -> (out [B, T, D], the updated cache or None when called without one).

        positions, segment_ids: [B, T] int (segment 0 = padding; None: one segment).
        causal: no token sees a later position. cache: the past tokens' entries; these
        tokens go into it and attend to what it holds. aligned: positions count up by one
        within each segment, so index-based masks (the fused kernels') are exact (see
        AttentionMask; ignored with a cache). global_tokens: bool [B, T], tokens that see
        and are seen past the window (not with a cache). bias: added to the logits
        (ALiBi, T5's relative bias).
        """
