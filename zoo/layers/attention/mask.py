"""Which keys each query may see, described by positions and segment ids rather than a dense mask.

Kernels that take structured masks (cuDNN, splash) read the fields; the plain kernel calls
`dense()`. A query sees a key when both belong to the same segment (segment 0 marks
padding and empty cache slots, which real tokens never see) and, if causal, the key's
position is not after the query's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """q_positions, q_segments: [B, T]; k_positions, k_segments: [B, S]; causal is static."""

    q_positions: jax.Array
    k_positions: jax.Array
    q_segments: jax.Array
    k_segments: jax.Array
    causal: bool = dataclasses.field(default=True, metadata=dict(static=True))

    @classmethod
    def self_attention(cls, positions: jax.Array, segments: jax.Array, *, causal: bool) -> AttentionMask:
        """Queries attending to their own sequence: positions, segments [B, T]."""
        return cls(positions, positions, segments, segments, causal)

    def dense(self) -> jax.Array:
        """bool [B, T, S], True where the query may attend to the key."""
        visible = self.q_segments[:, :, None] == self.k_segments[:, None, :]
        if self.causal:
            visible &= self.k_positions[:, None, :] <= self.q_positions[:, :, None]
        return visible
