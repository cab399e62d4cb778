"""Mamba-2's selective state-space scan (SSD, "state space duality"), in chunks.

Per head h, with a state S [P, N] and a scalar decay per token (Dao & Gu 2024, eq. 1):

    S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T        y_t = S_t C_t

Within a chunk of L tokens this is a masked attention-like product (the "diagonal blocks");
across chunks the state is carried by a scan over chunks. A chunk of one token is the
recurrent step used when decoding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_starts(segment_ids: jax.Array | None, shape: tuple[int, int]) -> jax.Array:
    """bool [B, T]: tokens where the state starts again from zero, a real token whose segment
    differs from the previous token's (never the first token: it continues the given state).
    Padding (segment 0) starts nothing, so it carries the state through unchanged."""
    if segment_ids is None:
        return jnp.zeros(shape, bool)
    changed = segment_ids[:, 1:] != segment_ids[:, :-1]
    starts = jnp.concatenate([jnp.zeros((shape[0], 1), bool), changed], axis=1)
    return starts & (segment_ids != 0)


def chunked(array: jax.Array, chunk: int) -> jax.Array:
    """[B, T, ...] -> [B, T // chunk, chunk, ...] (T already padded to a multiple of chunk)."""
    return array.reshape(array.shape[0], -1, chunk, *array.shape[2:])


def ssd_scan(
    x: jax.Array,
    dt: jax.Array,
    decay_rate: jax.Array,
    B: jax.Array,
    C: jax.Array,
    starts: jax.Array,
    state: jax.Array | None = None,
    *,
    chunk: int = 256,
) -> tuple[jax.Array, jax.Array]:
    """The scan S_t = exp(dt_t a) S_{t-1} + dt_t x_t B_t^T, y_t = S_t C_t, per head, in float32.

    x: [B, T, H, P]; dt: [B, T, H] (>= 0; 0 for padding, which then leaves the state as it
    is); decay_rate: a [H] (< 0); B, C: [B, T, G, N], head h reading group h // (H // G);
    starts: bool [B, T], where the state resets to zero first (segment_starts); state:
    [B, H, P, N], the state before x (None: zeros). chunk: tokens per block (a shorter
    sequence takes one block of its length).
    Returns (y [B, T, H, P], the state after the last token [B, H, P, N]), both float32.
    """
    batch, length, heads, head_dim = x.shape
    groups, state_dim = B.shape[2], B.shape[3]
    if heads % groups:
        raise ValueError(f"{heads} heads do not split into {groups} groups of B and C")
    chunk = min(chunk, length)
    pad = -length % chunk
    # padding to whole chunks: dt = 0, so the state passes through
    padded = lambda a: jnp.pad(a.astype(jnp.float32), [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    x, dt, B, C = (padded(a) for a in (x, dt, B, C))
    starts = jnp.pad(starts, [(0, 0), (0, pad)])
    # which run of tokens between resets each token is in: two tokens interact iff equal
    run = jnp.cumsum(starts, axis=1, dtype=jnp.int32)  # [B, T']
    repeat = heads // groups
    B, C = (jnp.repeat(a, repeat, axis=2) for a in (B, C))  # [B, T', H, N]

    log_decay = chunked(dt * decay_rate.astype(jnp.float32), chunk)  # [B, n, L, H]
    cumulative = jnp.cumsum(log_decay, axis=2)
    xs, dts, Bs, Cs, runs = (chunked(a, chunk) for a in (x, dt, B, C, run))
    weighted_x = xs * dts[..., None]  # dt_s x_s: [B, n, L, H, P]

    # within each chunk: y_t = sum_{s <= t, same run} (C_t . B_s) exp(cum_t - cum_s) dt_s x_s
    causal = jnp.tril(jnp.ones((chunk, chunk), bool))
    same_run = (runs[:, :, :, None] == runs[:, :, None, :]) & causal  # [B, n, L(t), L(s)]
    gap = cumulative[:, :, :, None, :] - cumulative[:, :, None, :, :]  # [B, n, L, L, H]
    mixing = jnp.exp(jnp.where(same_run[..., None], gap, -jnp.inf))
    scores = jnp.einsum("bclhn,bcshn->bclsh", Cs, Bs) * mixing
    y_within = jnp.einsum("bclsh,bcshp->bclhp", scores, weighted_x)

    # each chunk's own contribution to the state at its end (its last token's run only)
    last_run = runs[:, :, -1]  # [B, n]
    to_end = cumulative[:, :, -1:, :] - cumulative  # [B, n, L, H]
    kept = (runs == last_run[..., None])[..., None]
    to_end = jnp.exp(jnp.where(kept, to_end, -jnp.inf))
    chunk_states = jnp.einsum("bclhn,bclh,bclhp->bchpn", Bs, to_end, weighted_x)
    # the state entering a chunk survives it only if no reset happens inside it
    run_before = jnp.concatenate([jnp.zeros_like(last_run[:, :1]), last_run[:, :-1]], axis=1)  # [B, n]
    carried = jnp.where((last_run == run_before)[..., None], jnp.exp(cumulative[:, :, -1]), 0.0)  # [B, n, H]

    def step(previous, inputs):
        chunk_state, carry = inputs
        return previous * carry[:, :, None, None] + chunk_state, previous

    initial = jnp.zeros((batch, heads, head_dim, state_dim), jnp.float32) if state is None else state.astype(jnp.float32)
    final, entering = jax.lax.scan(step, initial, (jnp.moveaxis(chunk_states, 1, 0), jnp.moveaxis(carried, 1, 0)))
    entering = jnp.moveaxis(entering, 0, 1)  # the state before each chunk: [B, n, H, P, N]

    # the entering state's part of y_t: exp(cum_t) S_prev C_t, for tokens still in its run
    from_before = jnp.where((runs == run_before[..., None])[..., None], jnp.exp(cumulative), 0.0)  # [B, n, L, H]
    y_before = jnp.einsum("bclhn,bchpn,bclh->bclhp", Cs, entering, from_before)
    y = (y_within + y_before).reshape(batch, -1, heads, head_dim)[:, :length]
    return y, final
