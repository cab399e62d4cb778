"""The training and evaluation steps as pure functions of (state, batch)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from zoo.config import TrainConfig
from zoo.layers.lora import DropoutKey, fresh_dropout_keys
from zoo.layers.moe import MoEStats, load_balancing_loss
from zoo.models import Model
from zoo.train.loss import loss_sums, split_row

Batch = dict[str, jax.Array]  # tokens, segment_ids: [B, L]
Reduce = Callable[[Any], Any]  # sums a pytree over data-parallel replicas (identity under jit)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training: params (and router biases), optimizer state, step,
    and the key that the step's randomness (noisy routing) is drawn from. With LoRA, params are
    the adapters alone; the frozen base weights they adapt go to each step beside the state."""

    params: nnx.State
    opt_state: Any
    step: jax.Array
    rng: jax.Array


def trainable(model: Model, params: nnx.State) -> tuple[nnx.State, nnx.State | None]:
    """(what trains, what stays frozen): with LoRA the adapters and the base weights, else (params, None)."""
    if model.lora is None:
        return params, None
    return nnx.split_state(params, nnx.LoRAParam, ...)


def with_frozen(params: nnx.State, frozen: nnx.State | None) -> nnx.State:
    """The model's whole params: the trained ones and the frozen base (None: there is none)."""
    return params if frozen is None else nnx.merge_state(params, frozen)


def init_state(model: Model, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    init_key, rng = jax.random.split(key)
    params = trainable(model, model.init(init_key))[0]
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), rng)


def batch_sums(model: Model, params: nnx.State, batch: Batch, run: TrainConfig, noise_key=None) -> tuple:
    """(objective summed over counted tokens, sums, the model's MoEStats) for one batch of rows.

    sums: nll, z (log Z^2) and count over tokens; with MoE layers also moe_balance (the
    balancing loss of all layers together, see model_balancing_loss), moe_z (router z-losses
    summed over layers) and drop (each a per-batch value times count, so sums over batches
    stay token-weighted).
    """
    inputs, targets, weights = split_row(batch)
    module = model.bind(params)
    features = module.features(inputs["tokens"], segment_ids=inputs["segment_ids"], noise_key=noise_key)
    sums = loss_sums(module.logits, features.hidden, targets, weights, chunk_tokens=run.loss_chunk)
    objective = sums["nll"] + run.z_loss * sums["z"]
    layers = features.moe
    if layers:
        moe, count = model.config.moe, sums["count"]
        balance = model_balancing_loss(layers)
        router_z = sum(jnp.sum(layer.z_loss) for layer in layers)
        drop = jnp.mean(jnp.concatenate([jnp.ravel(layer.drop_fraction) for layer in layers]))
        sums = sums | {"moe_balance": balance * count, "moe_z": router_z * count, "drop": drop * count}
        objective = objective + count * (moe.load_balance_coef * balance + moe.z_loss_coef * router_z)
    return objective, sums, layers


def _per_expert(values: list[jax.Array]) -> jax.Array:
    """[E]: arrays [..., E] (each stacked over layers) summed over everything but experts."""
    return sum(jnp.sum(v.reshape(-1, v.shape[-1]), 0) for v in values)


def model_balancing_loss(layers: tuple[MoEStats, ...]) -> jax.Array:
    """[]: one load-balancing loss for the MoE layers (Features.moe: assigned and router_probs
    [..., E], routed_tokens [...], stacked over layers), as transformers computes it: over
    all the layers' routed tokens concatenated, not a sum of per-layer losses, so that a
    Hugging Face `router_aux_loss_coef` means the same here."""
    routed_tokens = sum(jnp.sum(layer.routed_tokens) for layer in layers)
    assigned, probs = _per_expert([layer.assigned for layer in layers]), _per_expert([layer.router_probs for layer in layers])
    return load_balancing_loss(assigned, probs, routed_tokens)


def micro_batches(batch: Batch, count: int) -> Batch:
    """[B, L] -> [count, B / count, L], micro-batch i taking rows i, i + count, ... so that a
    batch sharded in contiguous blocks of rows stays evenly sharded in every micro-batch."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch)


def metrics_from(sums: dict, moe: tuple[MoEStats, ...] = ()) -> dict:
    """Per-token means of the sums; with MoE layers also each expert's share of the routed tokens."""
    count = jnp.maximum(sums["count"], 1.0)
    metrics = {"loss": sums["nll"] / count, "z_loss": sums["z"] / count, "tokens": sums["count"]}
    if "moe_balance" in sums:
        metrics |= {"moe_balance_loss": sums["moe_balance"] / count, "moe_z_loss": sums["moe_z"] / count}
        metrics |= {"drop_fraction": sums["drop"] / count}
        load = _per_expert([layer.load for layer in moe])
        metrics["expert_load"] = load / jnp.maximum(jnp.sum(load), 1.0)
    return metrics


def train_step(
    model: Model, tx: optax.GradientTransformation, run: TrainConfig, reduce: Reduce = lambda tree: tree
) -> Callable[[TrainState, Batch, nnx.State | None], tuple[TrainState, dict]]:
    """(state, batch, frozen) -> (next state, {loss, z_loss, tokens, grad_norm, nonfinite_params, MoE stats}).

    Gradients of the summed objective are accumulated over `run.grad_accumulation`
    micro-batches, summed over replicas by `reduce`, and divided by the number of
    counted tokens, so every split of the same batch gives the same update. Routers with
    a loss-free balancing bias then move it by the step's total expert loads. `frozen`: the
    base weights LoRA adapters adapt (no gradient is taken for them), else None.
    """
    moe = model.config.moe
    balances_routers = moe is not None and moe.router == "sigmoid" and model.lora is None  # LoRA: biases stay frozen
    training = model.for_training()  # with LoRA dropout: its keys among the params, drawn for each micro-batch
    dropout_keys = nnx.split_state(training.abstract_params, DropoutKey, ...)[0] if training.dropout else None

    def objective(params, frozen, batch, key):
        params = with_frozen(params, frozen)
        if dropout_keys is not None:
            params = nnx.merge_state(params, fresh_dropout_keys(dropout_keys, jax.random.fold_in(key, 1)))
        return _objective(training, params, batch, run, key)

    def step(state: TrainState, batch: Batch, frozen: nnx.State | None = None):
        step_key = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(lambda p, b, key: objective(p, frozen, b, key), has_aux=True)

        def accumulate(totals, inputs):
            index, micro_batch = inputs
            (_, (sums, moe)), grads = grad_fn(state.params, micro_batch, jax.random.fold_in(step_key, index))
            return jax.tree.map(jnp.add, totals, (grads, sums, moe)), None

        micro = micro_batches(batch, run.grad_accumulation)
        first = jax.tree.map(lambda x: x[0], micro)
        shapes = jax.eval_shape(lambda: grad_fn(state.params, first, step_key))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[1], *shapes[0][1]))
        (grads, sums, moe), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(run.grad_accumulation), micro))
        grads, sums, moe = reduce((grads, sums, moe))
        grads = jax.tree.map(lambda g: g / jnp.maximum(sums["count"], 1.0), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if balances_routers:
            module = model.bind(params)
            module.balance_routers(moe)
            params = nnx.state(module)
        nonfinite = sum(jnp.sum(~jnp.isfinite(p)) for p in jax.tree.leaves(params)).astype(jnp.float32)
        metrics = metrics_from(sums, moe) | {"grad_norm": optax.tree.norm(grads), "nonfinite_params": nonfinite}
        return TrainState(params, opt_state, state.step + 1, state.rng), metrics

    return step


def _objective(model, params, batch, run, key):
    objective, sums, moe = batch_sums(model, params, batch, run, key)
    return objective, (sums, moe)


def eval_step(model: Model, run: TrainConfig, reduce: Reduce = lambda tree: tree) -> Callable[[nnx.State, Batch], dict]:
    """(params, batch, frozen) -> {loss, z_loss, tokens} (no router noise); frozen as in train_step."""

    def step(params: nnx.State, batch: Batch, frozen: nnx.State | None = None):
        _, sums, moe = batch_sums(model, with_frozen(params, frozen), batch, run)
        sums, moe = reduce((sums, moe))
        return metrics_from(sums, moe)

    return step
