"""The gated delta rule (Yang, Kautz & Hatamizadeh 2025), in chunks.

Per head, with a state S [Dk, Dv] (keys to values), a decay g_t <= 0 and a write strength beta_t:

    S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - (exp(g_t) S_{t-1})^T k_t))^T      o_t = S_t^T q_t

i.e. the decayed state is corrected towards v_t at key k_t. Within a chunk of L tokens the L
corrections are solved for at once (the UT transform: one unit lower-triangular system);
across chunks the state is carried by a scan. A chunk of one token is the recurrent step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers.recurrent.ssd import chunked


def gated_delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_decay: jax.Array,
    beta: jax.Array,
    starts: jax.Array,
    state: jax.Array | None = None,
    *,
    chunk: int = 64,
) -> tuple[jax.Array, jax.Array]:
    """The rule above for every head, in float32.

    q, k: [B, T, Hk, Dk]; v: [B, T, H, Dv], value head h reading key head h // (H // Hk);
    log_decay g, beta: [B, T, H] (both 0 for padding, which then leaves the state as it is);
    starts: bool [B, T], where the state resets to zero first (segment_starts); state:
    [B, H, Dk, Dv], the state before these tokens (None: zeros). chunk: tokens per block.
    Returns (o [B, T, H, Dv], the state after the last token [B, H, Dk, Dv]).
    """
    batch, length, heads, value_dim = v.shape
    key_heads, key_dim = k.shape[2], k.shape[3]
    if heads % key_heads:
        raise ValueError(f"{heads} value heads do not share {key_heads} key heads evenly")
    chunk = min(chunk, length)
    pad = -length % chunk
    padded = lambda a: jnp.pad(a.astype(jnp.float32), [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    q, k = (jnp.repeat(padded(a), heads // key_heads, axis=2) for a in (q, k))
    v, log_decay, beta = padded(v), padded(log_decay), padded(beta)
    run = jnp.cumsum(jnp.pad(starts, [(0, 0), (0, pad)]), axis=1, dtype=jnp.int32)  # tokens interact iff equal
    qs, ks, vs, betas, runs = (chunked(a, chunk) for a in (q, k, v, beta, run))
    cumulative = jnp.cumsum(chunked(log_decay, chunk), axis=2)  # [B, n, L, H]

    same_run = runs[:, :, :, None] == runs[:, :, None, :]  # [B, n, L(i), L(j)]
    causal = jnp.tril(jnp.ones((chunk, chunk), bool))
    gap = cumulative[:, :, :, None, :] - cumulative[:, :, None, :, :]  # [B, n, L, L, H]
    decay = jnp.exp(jnp.where((same_run & causal)[..., None], gap, -jnp.inf))  # j <= i, same run
    strictly = jnp.tril(jnp.ones((chunk, chunk), bool), -1)[..., None]
    # (I + A) U = beta V and (I + A) W = beta K exp(cum), A_ij = beta_i k_i . k_j decay_ij for j < i
    coupling = jnp.einsum("bcihd,bcjhd->bcijh", ks * betas[..., None], ks) * jnp.where(strictly, decay, 0.0)
    system = jnp.moveaxis(coupling, 4, 2) + jnp.eye(chunk)  # [B, n, H, L, L]
    run_before = jnp.concatenate([jnp.zeros_like(runs[:, :1, -1]), runs[:, :-1, -1]], axis=1)  # [B, n]
    in_first_run = (runs == run_before[..., None])[..., None]  # tokens the entering state reaches
    to_token = jnp.where(in_first_run, jnp.exp(cumulative), 0.0)  # [B, n, L, H]
    solve = lambda rhs: jnp.moveaxis(
        jax.lax.linalg.triangular_solve(system, jnp.moveaxis(rhs, 3, 2), left_side=True, lower=True, unit_diagonal=True), 2, 3
    )
    values = solve(vs * betas[..., None])  # U: [B, n, L, H, Dv]
    state_keys = solve(ks * (betas * to_token)[..., None])  # W: [B, n, L, H, Dk]
    scores = jnp.einsum("bcihd,bcjhd->bcijh", qs, ks) * decay  # [B, n, L, L, H]
    last = runs[:, :, -1:]  # the chunk's last run: the only one its end state keeps
    to_end = jnp.where((runs == last)[..., None], jnp.exp(cumulative[:, :, -1:] - cumulative), 0.0)  # [B, n, L, H]
    carried = jnp.where((last[:, :, 0] == run_before)[..., None], jnp.exp(cumulative[:, :, -1]), 0.0)  # [B, n, H]

    def step(S, inputs):
        U, W, Q, K, A, reach, end, keep = inputs
        corrected = U - jnp.einsum("blhd,bhde->blhe", W, S)  # the corrections, given the entering state
        out = jnp.einsum("blhd,bhde,blh->blhe", Q, S, reach) + jnp.einsum("blsh,bshe->blhe", A, corrected)
        S = S * keep[:, :, None, None] + jnp.einsum("blhd,blh,blhe->bhde", K, end, corrected)
        return S, out

    initial = jnp.zeros((batch, heads, key_dim, value_dim), jnp.float32) if state is None else state.astype(jnp.float32)
    per_chunk = (values, state_keys, qs, ks, scores, to_token, to_end, carried)
    final, out = jax.lax.scan(step, initial, tuple(jnp.moveaxis(a, 1, 0) for a in per_chunk))
    out = jnp.moveaxis(out, 0, 1).reshape(batch, -1, heads, value_dim)[:, :length]
    return out, final
