"""Next-token cross-entropy over packed rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of `targets` [B, T] under `logits` [B, T, V], over tokens with weight 1.

    Returns (mean loss, number of counted tokens). Computed in float32.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    weights = weights.astype(jnp.float32)
    count = jnp.sum(weights)
    return jnp.sum((log_z - target_logit) * weights) / jnp.maximum(count, 1.0), count


def split_row(batch: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Rows of L tokens -> model inputs (first L - 1), targets (last L - 1) and their weights.

    A target counts when it continues the same document as its input (not padding, not
    the first token of the next document).
    """
    segments = batch["segment_ids"]
    inputs = {
        "tokens": batch["tokens"][:, :-1],
        "positions": batch["positions"][:, :-1],
        "segment_ids": segments[:, :-1],
    }
    weights = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] != 0)
    return inputs, batch["tokens"][:, 1:], weights
