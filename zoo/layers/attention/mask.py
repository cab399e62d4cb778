"""Which keys each query may see, described by positions and segment ids rather than a dense mask.

Kernels that take structured masks (cuDNN, splash) read the fields; the plain kernel calls
`dense()`. A query sees a key when both belong to the same segment (segment 0 marks
padding and empty cache slots, which real tokens never see; no segment ids means one
segment), if causal the key's position is not after the query's, and with a window the
key is less than `window` positions away (keys in (q - window, q] when causal) or one of
the two is a global token (Longformer: global tokens see, and are seen by, all), and with a
`chunk` size both lie in the same chunk of positions, chunk = position // chunk (Llama 4's
chunked local attention: a causal query sees at most `chunk` keys, from its chunk's start).
A sparse attention's selection (`selected`, bool [B, T, S]: the keys each query's indexer
kept) is a dense mask that only the plain kernel takes.

`aligned` promises that the keys are the queries themselves and that positions count
up by one within each segment: then index-based causal and window masks (what fused
kernels offer) are the same as these position-based ones.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """q_positions, q_segments: [B, T]; k_positions, k_segments: [B, S] (segments both or neither);
    causal, window, aligned and chunk are static."""

    q_positions: jax.Array
    k_positions: jax.Array
    q_segments: jax.Array | None = None
    k_segments: jax.Array | None = None
    causal: bool = dataclasses.field(default=True, metadata=dict(static=True))
    window: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    aligned: bool = dataclasses.field(default=False, metadata=dict(static=True))
    q_global: jax.Array | None = None  # bool [B, T]
    k_global: jax.Array | None = None  # bool [B, S]
    chunk: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    selected: jax.Array | None = None  # bool [B, T, S]

    @classmethod
    def self_attention(
        cls,
        positions: jax.Array,
        segments: jax.Array | None,
        *,
        causal: bool,
        window: int | None = None,
        chunk: int | None = None,
    ) -> AttentionMask:
        """Queries attending to their own sequence: positions, segments [B, T]."""
        return cls(positions, positions, segments, segments, causal, window, chunk=chunk)

    def segments(self) -> tuple[jax.Array, jax.Array]:
        """(q_segments, k_segments), all ones when the mask has none."""
        if self.q_segments is not None:
            return self.q_segments, self.k_segments
        return jnp.ones(self.q_positions.shape, jnp.int32), jnp.ones(self.k_positions.shape, jnp.int32)

    def dense(self) -> jax.Array:
        """bool [B, T, S], True where the query may attend to the key."""
        q_segments, k_segments = self.segments()
        visible = q_segments[:, :, None] == k_segments[:, None, :]
        offset = self.q_positions[:, :, None] - self.k_positions[:, None, :]
        if self.causal:
            visible &= offset >= 0
        if self.window is not None:
            near = jnp.abs(offset) < self.window
            if self.q_global is not None:
                near |= self.q_global[:, :, None] | self.k_global[:, None, :]
            visible &= near
        if self.selected is not None:
            visible &= self.selected
        if self.chunk is not None:
            visible &= self.q_positions[:, :, None] // self.chunk == self.k_positions[:, None, :] // self.chunk
        return visible


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """[B, T] -> [B, T]: each token's index within its run of equal segment ids (0 at each start)."""
    index = jnp.arange(segment_ids.shape[-1], dtype=jnp.int32)
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
