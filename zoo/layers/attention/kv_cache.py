"""The cache of one attention layer: what it keeps per past token, full or as a rolling buffer."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Entries = dict[str, jax.Array]  # per-slot arrays [B, S, ...]: keys and values ("k", "v"), or MLA's latent


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Per-token entries of past tokens (GQA: "k", "v" [B, S, K, Dh]; MLA: its latent and
    shared RoPE key), with the position and segment of each slot.

    positions, segment_ids: [B, S] int32 (segment 0: empty slot); end: [B] int32, how many
    real tokens each row has seen. Padding (segment 0) must trail the real tokens of a
    row; the next call writes over it, so right-padded prompts of different lengths
    share one batch.

    A full cache writes token t of a row at slot end + t (writing past S is the caller's
    error: XLA clamps). A rolling cache (a windowed layer's) keeps only the last S real
    tokens, token t going to slot (end + t) % S.
    """

    entries: Entries
    positions: jax.Array
    segment_ids: jax.Array
    end: jax.Array
    rolling: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def empty(cls, batch: int, length: int, shapes: dict[str, tuple[int, ...]], dtype=jnp.float32, *, rolling: bool = False) -> KVCache:
        """A cache of `length` empty slots per row, with an entry [B, length, *shape] per name."""
        entries = {name: jnp.zeros((batch, length, *shape), dtype) for name, shape in shapes.items()}
        slots = jnp.zeros((batch, length), jnp.int32)
        return cls(entries, slots, slots, jnp.zeros((batch,), jnp.int32), rolling)

    @property
    def length(self) -> int:
        return self.positions.shape[-1]

    def update(self, new: Entries, positions: jax.Array, segment_ids: jax.Array) -> tuple[KVCache, tuple[Entries, jax.Array, jax.Array]]:
        """Adds new entries [B, T, ...] at positions/segments [B, T].

        Returns the new cache and what the new queries attend to (entries, positions,
        segments): the whole updated cache, or for a rolling cache (which may have to
        overwrite keys the new queries still need) the slots as they were followed by
        the new tokens.
        """
        real = jnp.sum(segment_ids != 0, axis=-1, dtype=jnp.int32)
        if not self.rolling:
            updated = self._write(self._from_end, new, positions, segment_ids, real)
            return updated, (updated.entries, updated.positions, updated.segment_ids)
        joined = lambda old, fresh: jnp.concatenate([old, fresh.astype(old.dtype)], axis=1)
        before = (
            {name: joined(self.entries[name], value) for name, value in new.items()},
            joined(self.positions, positions),
            joined(self.segment_ids, segment_ids),
        )
        return self._write(self._rolling_slots(positions.shape[1], real), new, positions, segment_ids, real), before

    def _from_end(self, buffer: jax.Array, new: jax.Array) -> jax.Array:
        update = jax.vmap(lambda row, x, start: jax.lax.dynamic_update_slice_in_dim(row, x, start, axis=0))
        return update(buffer, new.astype(buffer.dtype), self.end)

    def _rolling_slots(self, length: int, real: jax.Array):
        slots = self.length
        t = jnp.arange(length)
        # each row keeps its last `slots` real tokens; padding and older tokens go nowhere (dropped)
        kept = (t[None] < real[:, None]) & (t[None] >= real[:, None] - slots)
        target = jnp.where(kept, (self.end[:, None] + t[None]) % slots, slots)
        rows = jnp.arange(real.shape[0])[:, None]
        return lambda buffer, new: buffer.at[rows, target].set(new.astype(buffer.dtype), mode="drop")

    def _write(self, write, new: Entries, positions, segment_ids, real) -> KVCache:
        return dataclasses.replace(
            self,
            entries={name: write(buffer, new[name]) for name, buffer in self.entries.items()},
            positions=write(self.positions, positions),
            segment_ids=write(self.segment_ids, segment_ids),
            end=self.end + real,
        )
