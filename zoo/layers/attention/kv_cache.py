"""The key/value cache of one attention layer: one slot per token seen so far."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of past tokens, with the position and segment of each slot.

    k, v: [B, S, K, Dh]; positions, segment_ids: [B, S] int32 (segment 0: empty slot);
    end: [B] int32, the first free slot of each row. Each call writes its T tokens at
    slots end .. end + T - 1 and advances end by the number of real (segment != 0)
    tokens, so right-padded prompts of different lengths share one batch: the next
    token overwrites a row's padding. Writing past S is the caller's error (XLA clamps).
    """

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    segment_ids: jax.Array
    end: jax.Array

    @classmethod
    def empty(cls, batch: int, length: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32) -> KVCache:
        """A cache of `length` empty slots per row."""
        kv = jnp.zeros((batch, length, num_kv_heads, head_dim), dtype)
        slots = jnp.zeros((batch, length), jnp.int32)
        return cls(kv, kv, slots, slots, jnp.zeros((batch,), jnp.int32))

    def append(self, k: jax.Array, v: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> KVCache:
        """Writes new keys/values k, v [B, T, K, Dh] at their positions/segments [B, T]."""

        def write(buffer, new):
            update = jax.vmap(lambda row, x, start: jax.lax.dynamic_update_slice_in_dim(row, x, start, axis=0))
            return update(buffer, new.astype(buffer.dtype), self.end)

        return KVCache(
            k=write(self.k, k),
            v=write(self.v, v),
            positions=write(self.positions, positions.astype(jnp.int32)),
            segment_ids=write(self.segment_ids, segment_ids.astype(jnp.int32)),
            end=self.end + jnp.sum(segment_ids != 0, axis=-1, dtype=jnp.int32),
        )
