"""Additive attention-logit biases computed from positions (ALiBi, T5's relative bias)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LogitBias:
    """fn(params, q_positions [B, T], k_positions [B, S]) -> bias [B, H, T, S] added to the logits.

    `params` are arrays (learned, like T5's bucket table, or constant, like ALiBi's
    slopes); `fn` is static. Kernels call it on whole position rows or on blocks of
    keys, so the bias never has to exist whole, and gradients reach `params`.
    """

    params: Any
    fn: Callable = dataclasses.field(metadata=dict(static=True))

    def __call__(self, q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
        return self.fn(self.params, q_positions, k_positions)
