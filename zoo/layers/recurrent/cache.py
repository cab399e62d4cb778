"""The cache of a recurrent sequence mixer (Mamba-2, Gated DeltaNet): fixed-size states, not per-token entries."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

States = dict[str, jax.Array]  # per-row arrays [B, ...]: e.g. "conv" [B, W-1, C], "ssm" [B, H, P, N]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RecurrentCache:
    """A recurrent mixer's states after the tokens it has seen, and end [B] int32, how many real
    tokens each row has seen. Its size does not grow with the context.

    A call with the cache continues each row's sequence: its new tokens are one segment per
    row, real ones first, padding (segment 0) after, and padding leaves the states unchanged.
    """

    states: States
    end: jax.Array

    @classmethod
    def empty(cls, batch: int, shapes: dict[str, tuple[tuple[int, ...], jnp.dtype]]) -> RecurrentCache:
        """Zero states, one [B, *shape] array of its dtype per name (`shapes`: name -> (shape, dtype))."""
        states = {name: jnp.zeros((batch, *shape), dtype) for name, (shape, dtype) in shapes.items()}
        return cls(states, jnp.zeros((batch,), jnp.int32))

    def advanced(self, states: States, segment_ids: jax.Array) -> RecurrentCache:
        """The cache holding `states`, after the real tokens (segment != 0) of segment_ids [B, T]."""
        real = jnp.sum(segment_ids != 0, axis=-1, dtype=jnp.int32)
        kept = {name: value.astype(self.states[name].dtype) for name, value in states.items()}
        return RecurrentCache(kept, self.end + real)
