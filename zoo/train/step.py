"""The training and evaluation steps as pure functions of (state, batch)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from zoo.models import Model
from zoo.train.loss import next_token_loss, split_row

Batch = dict[str, jax.Array]  # tokens, segment_ids, positions: [B, L]


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


def batch_loss(model: Model, params: nnx.State, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Mean next-token loss over a batch of packed rows, and the number of tokens counted."""
    inputs, targets, weights = split_row(batch)
    logits, _ = model.apply(params, inputs["tokens"], inputs["positions"], inputs["segment_ids"])
    return next_token_loss(logits, targets, weights)


def train_step(model: Model, tx: optax.GradientTransformation) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """(state, batch) -> (next state, {loss, tokens, grad_norm})."""

    def step(state: TrainState, batch: Batch):
        (loss, tokens), grads = jax.value_and_grad(lambda p: batch_loss(model, p, batch), has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "tokens": tokens, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, opt_state, state.step + 1), metrics

    return step


def eval_step(model: Model) -> Callable[[nnx.State, Batch], dict]:
    """(params, batch) -> {loss, tokens}."""

    def step(params: nnx.State, batch: Batch):
        loss, tokens = batch_loss(model, params, batch)
        return {"loss": loss, "tokens": tokens}

    return step
