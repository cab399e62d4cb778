"""Sending tokens to their experts and combining what comes back.

dropless: every (token, expert) assignment is computed. Assignments are sorted by
expert and the experts run as grouped matmuls over the sorted rows (zoo.layers.moe.grouped_matmul).
capacity: each expert has C slots; assignments past them are dropped (their weight is
lost, so the token only keeps its residual), top-1 choices taking slots first.
expert_choice: each expert runs on the tokens it chose.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers.moe.experts import Experts
from zoo.layers.moe.router import Routing


def dropless(experts: Experts, x: jax.Array, routing: Routing) -> tuple[jax.Array, jax.Array]:
    """x [N, D] -> (sum over each token's k experts of weight * expert(x) [N, D], served [N, k]:
    which assignments an expert computed; all of them here)."""
    return dropless_rows(experts, x, routing.experts, routing.weights), routing.weights > 0


def dropless_rows(experts: Experts, x: jax.Array, chosen: jax.Array, weights: jax.Array, expert_weights=None) -> jax.Array:
    """x [N, D]; chosen, weights [N, k] -> each token's sum of weight * expert(x) [N, D]; the
    assignments sorted by expert and run as grouped matmuls (with `expert_weights`, zoo.layers.moe.experts.ExpertWeights, if given)."""
    tokens, k = chosen.shape
    flat = chosen.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    group_sizes = jnp.bincount(flat, length=experts.num_experts).astype(jnp.int32)
    outputs = experts.grouped(x[order // k], group_sizes, expert_weights)  # [N * k, D], sorted by expert
    unsorted = jnp.zeros_like(outputs).at[order].set(outputs).reshape(tokens, k, -1)
    combined = jnp.einsum("nk,nkd->nd", weights.astype(unsorted.dtype), unsorted)
    return combined.astype(x.dtype)


def slot_positions(routing: Routing, num_experts: int) -> jax.Array:
    """[N, k]: each assignment's place in its expert's queue; all first choices queue before
    any second choice, and within a choice tokens keep their order."""
    tokens, k = routing.experts.shape
    one_hot = jax.nn.one_hot(routing.experts.T.reshape(-1), num_experts, dtype=jnp.int32)  # choice-major order
    queue = jnp.cumsum(one_hot, axis=0) - 1
    return jnp.sum(queue * one_hot, axis=-1).reshape(k, tokens).T


def within_capacity(routing: Routing, num_experts: int, capacity: int) -> jax.Array:
    """[N, k]: the assignments that get one of their expert's `capacity` slots."""
    return (slot_positions(routing, num_experts) < capacity) & (routing.weights > 0)


def with_capacity(experts: Experts, x: jax.Array, routing: Routing, capacity: int) -> tuple[jax.Array, jax.Array]:
    """x [N, D] -> (combined expert outputs [N, D], served [N, k]: the assignments that got a slot)."""
    tokens, k = routing.experts.shape
    kept = within_capacity(routing, experts.num_experts, capacity)
    slot = jnp.where(kept, routing.experts * capacity + slot_positions(routing, experts.num_experts), experts.num_experts * capacity)  # overflow: dropped
    token_of_slot = jnp.broadcast_to(jnp.arange(tokens)[:, None], (tokens, k))
    buffer = jnp.zeros((experts.num_experts * capacity, x.shape[-1]), x.dtype)
    buffer = buffer.at[slot.reshape(-1)].set(x[token_of_slot.reshape(-1)], mode="drop")
    outputs = experts.batched(buffer.reshape(experts.num_experts, capacity, -1)).reshape(-1, x.shape[-1])
    gathered = jnp.take(outputs, jnp.minimum(slot, outputs.shape[0] - 1), axis=0)  # [N, k, D]
    weights = jnp.where(kept, routing.weights, 0.0).astype(gathered.dtype)
    combined = jnp.einsum("nk,nkd->nd", weights, gathered)
    return combined.astype(x.dtype), kept


def expert_choice(experts: Experts, x: jax.Array, routing: Routing) -> tuple[jax.Array, jax.Array]:
    """Each expert runs on the C tokens it chose; a token's output sums weight * expert(x) over
    the experts that took it (none: only its residual). Returns it and served [N, E]."""
    chosen = routing.chosen_tokens  # [E, C]
    outputs = experts.batched(x[chosen])  # [E, C, D]
    weights = jnp.take_along_axis(routing.weights.T, chosen, axis=1)  # [E, C]
    combined = jnp.zeros((x.shape[0], outputs.shape[-1]), outputs.dtype)
    combined = combined.at[chosen.reshape(-1)].add((weights[..., None] * outputs).reshape(-1, outputs.shape[-1]))
    return combined.astype(x.dtype), routing.weights > 0
