"""Which keys each query may see, described by positions and segment ids rather than a dense mask.

Kernels that take structured masks (cuDNN, splash) read the fields; the plain kernel calls
`dense()`. A query sees a key when both belong to the same segment (segment 0 marks
padding and empty cache slots, which real tokens never see), if causal the key's
position is not after the query's, and with a window the key is less than `window`
positions away (keys in (q - window, q] when causal).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """q_positions, q_segments: [B, T]; k_positions, k_segments: [B, S]; causal and window are static."""

    q_positions: jax.Array
    k_positions: jax.Array
    q_segments: jax.Array
    k_segments: jax.Array
    causal: bool = dataclasses.field(default=True, metadata=dict(static=True))
    window: int | None = dataclasses.field(default=None, metadata=dict(static=True))

    @classmethod
    def self_attention(
        cls, positions: jax.Array, segments: jax.Array, *, causal: bool, window: int | None = None
    ) -> AttentionMask:
        """Queries attending to their own sequence: positions, segments [B, T]."""
        return cls(positions, positions, segments, segments, causal, window)

    def dense(self) -> jax.Array:
        """bool [B, T, S], True where the query may attend to the key."""
        visible = self.q_segments[:, :, None] == self.k_segments[:, None, :]
        offset = self.q_positions[:, :, None] - self.k_positions[:, None, :]
        if self.causal:
            visible &= offset >= 0
        if self.window is not None:
            visible &= jnp.abs(offset) < self.window
        return visible
