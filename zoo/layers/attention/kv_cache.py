"""The key/value cache of one attention layer: full, or a rolling buffer for windowed layers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Keys = tuple[jax.Array, jax.Array, jax.Array, jax.Array]  # keys, values, their positions, their segments


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of past tokens, with the position and segment of each slot.

    k, v: [B, S, K, Dh]; positions, segment_ids: [B, S] int32 (segment 0: empty slot);
    end: [B] int32, how many real tokens each row has seen. Padding (segment 0) must
    trail the real tokens of a row; the next call writes over it, so right-padded prompts
    of different lengths share one batch.

    A full cache writes token t of a row at slot end + t (writing past S is the caller's
    error: XLA clamps). A rolling cache (a windowed layer's) keeps only the last S real
    tokens, token t going to slot (end + t) % S.
    """

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    segment_ids: jax.Array
    end: jax.Array
    rolling: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def empty(
        cls, batch: int, length: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32, *, rolling: bool = False
    ) -> KVCache:
        """A cache of `length` empty slots per row."""
        kv = jnp.zeros((batch, length, num_kv_heads, head_dim), dtype)
        slots = jnp.zeros((batch, length), jnp.int32)
        return cls(kv, kv, slots, slots, jnp.zeros((batch,), jnp.int32), rolling)

    def update(self, k: jax.Array, v: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> tuple[KVCache, Keys]:
        """Adds new keys/values k, v [B, T, K, Dh] at positions/segments [B, T].

        Returns the new cache and what the new queries attend to: the whole updated
        cache, or for a rolling cache (which may have to overwrite keys the new queries
        still need) the slots as they were followed by the new keys.
        """
        real = jnp.sum(segment_ids != 0, axis=-1, dtype=jnp.int32)
        if not self.rolling:
            updated = self._write_from_end(k, v, positions, segment_ids, real)
            return updated, (updated.k, updated.v, updated.positions, updated.segment_ids)
        before = tuple(
            jnp.concatenate([old, new.astype(old.dtype)], axis=1)
            for old, new in ((self.k, k), (self.v, v), (self.positions, positions), (self.segment_ids, segment_ids))
        )
        return self._write_rolling(k, v, positions, segment_ids, real), before

    def _write_from_end(self, k, v, positions, segment_ids, real) -> KVCache:
        def write(buffer, new):
            update = jax.vmap(lambda row, x, start: jax.lax.dynamic_update_slice_in_dim(row, x, start, axis=0))
            return update(buffer, new.astype(buffer.dtype), self.end)

        return self._written(write, k, v, positions, segment_ids, real)

    def _write_rolling(self, k, v, positions, segment_ids, real) -> KVCache:
        slots, length = self.k.shape[1], k.shape[1]
        t = jnp.arange(length)
        # each row keeps its last `slots` real tokens; padding and older tokens go nowhere (dropped)
        kept = (t[None] < real[:, None]) & (t[None] >= real[:, None] - slots)
        target = jnp.where(kept, (self.end[:, None] + t[None]) % slots, slots)
        rows = jnp.arange(k.shape[0])[:, None]

        def write(buffer, new):
            return buffer.at[rows, target].set(new.astype(buffer.dtype), mode="drop")

        return self._written(write, k, v, positions, segment_ids, real)

    def _written(self, write, k, v, positions, segment_ids, real) -> KVCache:
        return dataclasses.replace(
            self,
            k=write(self.k, k),
            v=write(self.v, v),
            positions=write(self.positions, positions),
            segment_ids=write(self.segment_ids, segment_ids),
            end=self.end + real,
        )
