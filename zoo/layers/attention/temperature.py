"""Attention temperature tuning (Llama 4's NoPE layers): queries scaled up with their position.

Without positions in the logits, a long context spreads the softmax thin; scaling each
query by a factor that grows like the log of its position keeps it sharp (Nakanishi 2025,
"Scalable-Softmax Is Superior for Attention", arXiv 2501.19399). Llama 4's factor is a
step function of the position p: 1 for p + 1 < floor_scale, then

    log(floor((p + 1) / floor_scale) + 1) * scale + 1
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class QueryTemperature:
    """positions [B, T] -> each query's factor [B, T] (float32); floor_scale in tokens, scale its strength."""

    floor_scale: float
    scale: float

    def __call__(self, positions: jax.Array) -> jax.Array:
        steps = jnp.floor((positions.astype(jnp.float32) + 1.0) / self.floor_scale)
        return jnp.log1p(steps) * self.scale + 1.0
