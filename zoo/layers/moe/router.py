"""Routers: which experts each token goes to, with what weight, and the statistics for the losses.

Every router maps tokens x [N, D] to a Routing. Token-choice routers pick k experts per
token from scores over the experts; DeepSeek's group-limited routing first keeps the
best groups of experts. The expert-choice router lets each expert pick its tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import constant, fan_in_normal, param
from zoo.registry import Registry


class RouterBias(nnx.Variable):
    """The auxiliary-loss-free balancing bias [E]: not trained by the optimizer, moved after
    each step towards even load (see `balance`)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Routing:
    """experts, weights: [N, k] chosen experts and combine weights (weight 0 means unused);
    probs: [N, E] the router's distribution (for the balancing loss); logits: [N, E];
    chosen_tokens: [E, C] the tokens each expert took (expert-choice routing only)."""

    experts: jax.Array
    weights: jax.Array
    probs: jax.Array
    logits: jax.Array
    chosen_tokens: jax.Array | None = None


ROUTERS: Registry = Registry("router")


def top_k(scores: jax.Array, k: int, *, num_groups: int = 1, top_groups: int = 1) -> jax.Array:
    """[N, k] the k best experts by `scores` [N, E]; with groups, only among the `top_groups`
    groups (of E / num_groups experts) whose two best scores sum highest (DeepSeek-V3)."""
    if num_groups > 1:
        tokens, experts = scores.shape
        grouped = scores.reshape(tokens, num_groups, experts // num_groups)
        best_two = jax.lax.top_k(grouped, min(2, grouped.shape[-1]))[0].sum(-1)  # [N, groups]
        kept_groups = jax.lax.top_k(best_two, top_groups)[1]
        keep = jnp.zeros((tokens, num_groups), bool).at[jnp.arange(tokens)[:, None], kept_groups].set(True)
        scores = jnp.where(jnp.repeat(keep, experts // num_groups, axis=1), scores, -jnp.inf)
    return jax.lax.top_k(scores, k)[1]


class Router(nnx.Module):
    """x [N, D] -> Routing over `num_experts` experts, `top_k` per token.

    kind: softmax (Mixtral; `renormalize` the chosen weights to sum to 1), switch (top-1
    softmax), noisy (softmax over top-k of logits plus learned noise in training, Shazeer
    et al. 2017), sigmoid (DeepSeek-V3: sigmoid scores, selection by scores + a balancing
    bias that leaves the weights alone, weights normalised over the chosen), top_sigmoid
    (Llama 4: top-k by logit, weights the sigmoid of the chosen logits), or expert_choice
    (each expert takes its `capacity` best tokens, Zhou et al. 2022). Weights are multiplied
    by `routed_scale`. With `logit_bias`, a learned bias [E] is added to the logits (gpt-oss;
    softmax renormalised over the chosen k is gpt-oss's softmax over their logits alone).
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        kind: str = "softmax",
        renormalize: bool = True,
        num_groups: int = 1,
        top_groups: int = 1,
        routed_scale: float = 1.0,
        capacity_factor: float | None = None,
        logit_bias: bool = False,
        rngs: nnx.Rngs,
    ):
        self.route = ROUTERS.get(kind)
        self.weight = param(rngs.params(), fan_in_normal(dim), (dim, num_experts), ("embed", None), jnp.float32)
        self.noise = (
            param(rngs.params(), constant(0.0), (dim, num_experts), ("embed", None), jnp.float32) if kind == "noisy" else None
        )
        self.bias = RouterBias(jnp.zeros((num_experts,), jnp.float32)) if kind == "sigmoid" else None
        self.logit_bias = param(None, constant(0.0), (num_experts,), (None,), jnp.float32) if logit_bias else None
        self.kind, self.top_k, self.renormalize = kind, top_k, renormalize
        self.num_groups, self.top_groups, self.routed_scale = num_groups, top_groups, routed_scale
        self.capacity_factor = capacity_factor

    def __call__(self, x: jax.Array, *, noise_key: jax.Array | None = None) -> Routing:
        """x: [N, D]. noise_key: randomness for the noisy router in training (None: no noise)."""
        logits = x.astype(jnp.float32) @ self.weight[...]
        if self.logit_bias is not None:
            logits = logits + self.logit_bias[...]
        routing = self.route(self, x, logits, noise_key)
        return dataclasses.replace(routing, weights=routing.weights * self.routed_scale)


def _renormalized(weights: jax.Array) -> jax.Array:
    return weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-9)


@ROUTERS.register("softmax")
def softmax_routing(router: Router, x, logits, noise_key) -> Routing:
    probs = jax.nn.softmax(logits, axis=-1)
    experts = top_k(probs, router.top_k, num_groups=router.num_groups, top_groups=router.top_groups)
    weights = jnp.take_along_axis(probs, experts, axis=-1)
    return Routing(experts, _renormalized(weights) if router.renormalize else weights, probs, logits)


@ROUTERS.register("switch")
def switch_routing(router: Router, x, logits, noise_key) -> Routing:
    probs = jax.nn.softmax(logits, axis=-1)
    experts = jnp.argmax(probs, axis=-1)[:, None]
    return Routing(experts, jnp.take_along_axis(probs, experts, axis=-1), probs, logits)


@ROUTERS.register("noisy")
def noisy_routing(router: Router, x, logits, noise_key) -> Routing:
    if noise_key is not None:  # H(x) = x W_g + N(0, 1) * softplus(x W_noise), in training only
        scale = jax.nn.softplus(x.astype(jnp.float32) @ router.noise[...])
        logits = logits + jax.random.normal(noise_key, logits.shape) * scale
    experts = top_k(logits, router.top_k, num_groups=router.num_groups, top_groups=router.top_groups)
    weights = jax.nn.softmax(jnp.take_along_axis(logits, experts, axis=-1), axis=-1)  # softmax over the kept k
    return Routing(experts, weights, jax.nn.softmax(logits, axis=-1), logits)


@ROUTERS.register("sigmoid")
def sigmoid_routing(router: Router, x, logits, noise_key) -> Routing:
    scores = jax.nn.sigmoid(logits)
    chosen_by = scores + jax.lax.stop_gradient(router.bias[...])  # the bias picks, it never weighs
    experts = top_k(chosen_by, router.top_k, num_groups=router.num_groups, top_groups=router.top_groups)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
    return Routing(experts, _renormalized(weights) if router.renormalize else weights, scores / scores.sum(-1, keepdims=True), logits)


@ROUTERS.register("top_sigmoid")
def top_sigmoid_routing(router: Router, x, logits, noise_key) -> Routing:
    """Llama 4: the top-k experts by logit, each weighted by the sigmoid of its logit (no balancing bias)."""
    experts = top_k(logits, router.top_k, num_groups=router.num_groups, top_groups=router.top_groups)
    weights = jax.nn.sigmoid(jnp.take_along_axis(logits, experts, axis=-1))
    scores = jax.nn.sigmoid(logits)
    return Routing(experts, _renormalized(weights) if router.renormalize else weights, scores / scores.sum(-1, keepdims=True), logits)


@ROUTERS.register("expert_choice")
def expert_choice_routing(router: Router, x, logits, noise_key) -> Routing:
    """Each expert takes its C = capacity_factor * N * k / E best tokens by router probability.
    experts/weights come back per token as [N, E]: weight 0 where an expert did not take it."""
    probs = jax.nn.softmax(logits, axis=-1)
    tokens, num_experts = probs.shape
    capacity = expert_capacity(tokens, router.top_k, num_experts, router.capacity_factor or 1.0)
    chosen_tokens = jax.lax.top_k(probs.T, capacity)[1]  # [E, C]
    taken = jnp.zeros((num_experts, tokens), bool).at[jnp.arange(num_experts)[:, None], chosen_tokens].set(True).T
    experts = jnp.broadcast_to(jnp.arange(num_experts), (tokens, num_experts))
    return Routing(experts, jnp.where(taken, probs, 0.0), probs, logits, chosen_tokens)


def expert_capacity(tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """Slots per expert: capacity_factor times an even share of the N * k assignments (at least 1)."""
    return max(1, min(tokens, int(-(-capacity_factor * tokens * top_k // num_experts))))


def balance(bias: jax.Array, load: jax.Array, rate: float) -> jax.Array:
    """DeepSeek-V3's auxiliary-loss-free update: raise the bias of under-loaded experts and lower
    that of over-loaded ones by `rate`. load: [..., E] tokens per expert; bias: [..., E]."""
    return bias + rate * jnp.sign(jnp.mean(load, axis=-1, keepdims=True) - load)
