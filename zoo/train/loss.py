"""Next-token cross-entropy over packed rows, with the output projection computed in chunks."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def split_row(batch: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Rows of L tokens -> model inputs (first L - 1), targets (last L - 1) and their weights.

    A target counts when it continues the same document as its input (not padding, not
    the first token of the next document).
    """
    segments = batch["segment_ids"]
    inputs = {"tokens": batch["tokens"][:, :-1], "segment_ids": segments[:, :-1]}
    weights = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] != 0)
    return inputs, batch["tokens"][:, 1:], weights


def token_losses(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token -log p(target) and log Z (the log-partition), in float32. logits: [..., V]."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit, log_z


def loss_sums(
    logits_fn: Callable[[jax.Array], jax.Array],
    hidden: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    *,
    chunk_tokens: int,
) -> dict[str, jax.Array]:
    """Sums over counted tokens of the cross-entropy (`nll`) and of log Z^2 (`z`), and the `count`.

    hidden: [B, T, D] final hidden states; `logits_fn` maps [B, c, D] to logits
    [B, c, V]. The sequence is cut into chunks of c = chunk_tokens // B positions and
    each chunk's logits are recomputed in the backward pass, so no more than about
    chunk_tokens x V logits exist at once. The batch axis is never split (it may be sharded).
    """
    batch, length, dim = hidden.shape
    chunk = max(1, min(length, chunk_tokens // batch))
    padded = -(-length // chunk) * chunk
    pad = ((0, 0), (0, padded - length))
    hidden = jnp.pad(hidden, pad + ((0, 0),))
    targets, weights = jnp.pad(targets, pad), jnp.pad(weights.astype(jnp.float32), pad)

    def chunks(x):  # [B, padded, ...] -> [n, B, chunk, ...]
        return jnp.moveaxis(x.reshape(batch, padded // chunk, chunk, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def add_chunk(totals, xs):
        h, t, w = xs
        nll, log_z = token_losses(logits_fn(h), t)
        return (totals[0] + jnp.sum(nll * w), totals[1] + jnp.sum(jnp.square(log_z) * w)), None

    zero = jnp.zeros((), jnp.float32)
    (nll, z), _ = jax.lax.scan(add_chunk, (zero, zero), (chunks(hidden), chunks(targets), chunks(weights)))
    return {"nll": nll, "z": z, "count": jnp.sum(weights)}
