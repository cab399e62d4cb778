"""The mixture-of-experts feed-forward: router, experts, dispatch, shared experts and losses."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.linear import Linear
from zoo.layers.mlp import FeedForward
from zoo.layers.moe import dispatch, expert_parallel
from zoo.layers.moe.experts import Experts
from zoo.layers.moe.router import Router, Routing, expert_capacity


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MoEStats:
    """What one MoE layer reports about its routing (a model stacks them over its layers: [L, ...]).

    assigned [E]: tokens sent to each expert over all k choices; router_probs [E]: the router
    probability summed over the tokens; routed_tokens []: N (see balance_sums). load [E]:
    tokens each expert received after drops; drop_fraction []; load_balance_loss [] (this
    layer's alone) and z_loss [].
    """

    assigned: jax.Array
    router_probs: jax.Array
    routed_tokens: jax.Array
    load: jax.Array
    drop_fraction: jax.Array
    load_balance_loss: jax.Array
    z_loss: jax.Array


def balance_sums(routing: Routing, num_experts: int) -> dict[str, jax.Array]:
    """What the load-balancing loss of N routed tokens is made of: assigned [E] (the tokens
    sent to each expert, over all k choices), router_probs [E] (the router probability
    summed over the tokens) and routed_tokens [] (N)."""
    assigned = jax.nn.one_hot(routing.experts, num_experts) * (routing.weights > 0)[..., None]  # [N, k, E]
    tokens = routing.probs.shape[0]
    return {"assigned": assigned.sum((0, 1)), "router_probs": routing.probs.sum(0), "routed_tokens": jnp.float32(tokens)}


def load_balancing_loss(assigned: jax.Array, router_probs: jax.Array, routed_tokens: jax.Array) -> jax.Array:
    """Switch/GShard, normalised as transformers' load_balancing_loss_func: E * sum_e f_e P_e
    with f_e = assigned_e / N the fraction of the N tokens routed to e over all k choices
    (sum_e f_e = k) and P_e = router_probs_e / N the mean router probability of e.

    assigned, router_probs: [E] and routed_tokens: [] as balance_sums gives them. Summed over
    several layers they give the loss of all their tokens concatenated, which is how
    transformers combines a model's layers into one loss.
    """
    return assigned.shape[-1] * jnp.sum(assigned * router_probs) / jnp.maximum(routed_tokens, 1.0) ** 2


def router_z_loss(logits: jax.Array) -> jax.Array:
    """mean over tokens of logsumexp(router logits)^2 (Zoph et al. 2022)."""
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))


class MoE(nnx.Module):
    """x [..., D] -> ([..., D], MoEStats).

    Each token goes to `top_k` of `num_experts` experts of width `expert_dim` (see Router
    for the router kinds) and, with `shared_dim`, through a shared feed-forward too;
    `shared_gate` scales that one per token by sigmoid(x W_gate), W_gate [D, 1] (Qwen2-MoE).
    `router_bias`, `expert_bias`, `swiglu_limit` and `swiglu_alpha`: gpt-oss's biased router
    logits, biased experts and clamped SwiGLU (see Router and Experts).
    Dispatch is dropless unless `capacity_factor` is set. `weights_on_inputs` scales each
    token's input to its expert by the router weight instead of the expert's output (Llama 4;
    top-1 routing only, where the two differ by the expert's non-linearity). Under a mesh (`jax.set_mesh`)
    whose `expert` axis splits the experts, token-choice routing sends tokens to them by
    all-to-all (see expert_parallel); the result is the same.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        expert_dim: int,
        *,
        router: str = "softmax",
        renormalize: bool = True,
        num_groups: int = 1,
        top_groups: int = 1,
        routed_scale: float = 1.0,
        capacity_factor: float | None = None,
        shared_dim: int = 0,
        shared_gate: bool = False,
        weights_on_inputs: bool = False,
        activation: str = "silu",
        gated: bool = True,
        router_bias: bool = False,
        expert_bias: bool = False,
        swiglu_limit: float | None = None,
        swiglu_alpha: float = 1.702,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.router = Router(
            dim, num_experts, top_k, kind=router, renormalize=renormalize, num_groups=num_groups,
            top_groups=top_groups, routed_scale=routed_scale, capacity_factor=capacity_factor, logit_bias=router_bias, rngs=rngs,
        )
        self.experts = Experts(
            num_experts, dim, expert_dim, activation=activation, gated=gated, bias=expert_bias, swiglu_limit=swiglu_limit,
            swiglu_alpha=swiglu_alpha, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
        self.shared = (
            FeedForward(dim, shared_dim, activation=activation, gated=gated, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            if shared_dim
            else None
        )
        if shared_gate and not shared_dim:
            raise ValueError("shared_gate gates the shared feed-forward; set shared_dim")
        self.shared_gate = (
            Linear(dim, 1, ("embed", None), dtype=dtype, param_dtype=param_dtype, rngs=rngs) if shared_gate else None
        )
        if weights_on_inputs and (top_k != 1 or router == "expert_choice"):
            raise ValueError(f"weights_on_inputs scales a token's one expert input; it needs top-1 token choice, got {router} top_k={top_k}")
        self.capacity_factor, self.weights_on_inputs = capacity_factor, weights_on_inputs

    def __call__(self, x: jax.Array, *, noise_key: jax.Array | None = None) -> tuple[jax.Array, MoEStats]:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        routing = self.router(tokens, noise_key=noise_key)
        taps.tap("router.logits", routing.logits), taps.tap("router.experts", routing.experts), taps.tap("router.weights", routing.weights)
        routed, weighed = tokens, routing
        if self.weights_on_inputs:  # the expert sees weight * x and its output is taken whole
            routed = (tokens * routing.weights.astype(tokens.dtype)).astype(tokens.dtype)
            weighed = dataclasses.replace(routing, weights=(routing.weights > 0).astype(routing.weights.dtype))
        num_experts = self.experts.num_experts
        capacity = None
        if self.capacity_factor is not None and self.router.kind != "expert_choice":
            capacity = expert_capacity(tokens.shape[0], routing.experts.shape[1], num_experts, self.capacity_factor)
        split = None if self.router.kind == "expert_choice" else expert_parallel.layout_for(tokens.shape[0], num_experts)
        if split is not None:
            served = routing.weights > 0 if capacity is None else dispatch.within_capacity(routing, num_experts, capacity)
            out = expert_parallel.dispatch(self.experts, routed, weighed.experts, weighed.weights, served, *split, capacity)
        elif self.router.kind == "expert_choice":
            out, served = dispatch.expert_choice(self.experts, routed, weighed)
        elif (local := expert_parallel.token_layout(tokens.shape[0])) is not None:
            # tokens split over devices: each runs its own; which assignments an expert's capacity
            # keeps is decided over the whole batch, as on one device, and the rest weigh nothing
            served = weighed.weights > 0 if capacity is None else dispatch.within_capacity(weighed, num_experts, capacity)
            kept = jnp.where(served, weighed.weights, 0).astype(weighed.weights.dtype)
            out = expert_parallel.dropless_per_device(self.experts, routed, weighed.experts, kept, *local)
        elif capacity is None:
            out, served = dispatch.dropless(self.experts, routed, weighed)
        else:
            out, served = dispatch.with_capacity(self.experts, routed, weighed, capacity)
        if self.shared is not None:
            shared = self.shared(tokens)
            out = out + (shared if self.shared_gate is None else jax.nn.sigmoid(self.shared_gate(tokens)) * shared)
        sums = balance_sums(routing, num_experts)
        stats = MoEStats(
            **sums,
            load=jnp.sum(jax.nn.one_hot(routing.experts, num_experts) * served[..., None], axis=(0, 1)),
            drop_fraction=1.0 - jnp.sum(served) / jnp.maximum(jnp.sum(routing.weights > 0), 1),
            load_balance_loss=load_balancing_loss(**sums),
            z_loss=router_z_loss(routing.logits),
        )
        return taps.tap("moe.output", out.reshape(shape)), stats
