"""The training and evaluation steps as pure functions of (state, batch)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from zoo.config import TrainConfig
from zoo.models import Model
from zoo.train.loss import loss_sums, split_row

Batch = dict[str, jax.Array]  # tokens, segment_ids: [B, L]
Reduce = Callable[[Any], Any]  # sums a pytree over data-parallel replicas (identity under jit)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training: params, optimizer state, step counter."""

    params: nnx.State
    opt_state: Any
    step: jax.Array


def init_state(model: Model, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    params = model.init(key)
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def batch_sums(model: Model, params: nnx.State, batch: Batch, run: TrainConfig) -> tuple[jax.Array, dict]:
    """(objective summed over counted tokens, {nll, z, count} sums) for one batch of rows."""
    inputs, targets, weights = split_row(batch)
    module = model.bind(params)
    hidden, _, _ = module.features(inputs["tokens"], segment_ids=inputs["segment_ids"])
    sums = loss_sums(module.logits, hidden, targets, weights, chunk_tokens=run.loss_chunk)
    return sums["nll"] + run.z_loss * sums["z"], sums


def micro_batches(batch: Batch, count: int) -> Batch:
    """[B, L] -> [count, B / count, L], micro-batch i taking rows i, i + count, ... so that a
    batch sharded in contiguous blocks of rows stays evenly sharded in every micro-batch."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch)


def metrics_from(sums: dict) -> dict:
    count = jnp.maximum(sums["count"], 1.0)
    return {"loss": sums["nll"] / count, "z_loss": sums["z"] / count, "tokens": sums["count"]}


def train_step(
    model: Model, tx: optax.GradientTransformation, run: TrainConfig, reduce: Reduce = lambda tree: tree
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """(state, batch) -> (next state, {loss, z_loss, tokens, grad_norm, nonfinite_params}).

    Gradients of the summed objective are accumulated over `run.grad_accumulation`
    micro-batches, summed over replicas by `reduce`, and divided by the number of
    counted tokens, so every split of the same batch gives the same update.
    """

    def step(state: TrainState, batch: Batch):
        grad_fn = jax.value_and_grad(lambda p, b: batch_sums(model, p, b, run), has_aux=True)

        def accumulate(totals, micro_batch):
            (_, sums), grads = grad_fn(state.params, micro_batch)
            return jax.tree.map(jnp.add, totals, (grads, sums)), None

        zero = jnp.zeros((), jnp.float32)
        zeros = (jax.tree.map(jnp.zeros_like, state.params), {"nll": zero, "z": zero, "count": zero})
        (grads, sums), _ = jax.lax.scan(accumulate, zeros, micro_batches(batch, run.grad_accumulation))
        grads, sums = reduce((grads, sums))
        grads = jax.tree.map(lambda g: g / jnp.maximum(sums["count"], 1.0), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        nonfinite = sum(jnp.sum(~jnp.isfinite(p)) for p in jax.tree.leaves(params)).astype(jnp.float32)
        metrics = metrics_from(sums) | {"grad_norm": optax.tree.norm(grads), "nonfinite_params": nonfinite}
        return TrainState(params, opt_state, state.step + 1), metrics

    return step


def eval_step(model: Model, run: TrainConfig, reduce: Reduce = lambda tree: tree) -> Callable[[nnx.State, Batch], dict]:
    """(params, batch) -> {loss, z_loss, tokens}."""

    def step(params: nnx.State, batch: Batch):
        _, sums = batch_sums(model, params, batch, run)
        return metrics_from(reduce(sums))

    return step
