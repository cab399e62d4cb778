"""How a training step runs over devices: jit over a sharded mesh, or pmap data parallelism.

Both strategies offer the same small interface to the loop: create or restore the
state, place a process's batch, run a step, evaluate, and hand the state to a checkpoint.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoo.config import TrainConfig
from zoo.models import Model
from zoo.sharding import BATCH_AXES, partition_spec, shardings
from zoo.train.step import TrainState, eval_step, init_state, train_step, trainable



class ShardedJit:
    """One jitted step over a mesh; params, optimizer state and batches laid out by the rules.

    Each jitted call runs under `jax.set_mesh(mesh)`, so it is traced with the mesh that
    pins activations (zoo.layers.layout.constrain) and splits experts over devices.
    """

    def __init__(self, model: Model, tx, run: TrainConfig, mesh: Mesh):
        self.mesh = mesh
        self._make = functools.partial(init_state, model, tx)
        self.state_layout = shardings(jax.eval_shape(self._make, jax.random.key(0)), mesh)
        frozen = trainable(model, model.abstract_params)[1]
        self.frozen_layout = None if frozen is None else shardings(frozen, mesh)
        self.frozen = None  # the base weights LoRA adapts: set_frozen
        rows = (run.batch_size, run.seq_len + 1)
        self.batch_layout = NamedSharding(mesh, partition_spec(("batch", "length"), rows, mesh))
        self._step = jax.jit(train_step(model, tx, run), out_shardings=(self.state_layout, None), donate_argnums=0)
        self._eval = jax.jit(eval_step(model, run))

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def batch_devices(self) -> int:
        return math.prod(self.mesh.shape[a] for a in BATCH_AXES)

    def init(self, key: jax.Array) -> TrainState:
        with jax.set_mesh(self.mesh):
            return jax.jit(self._make, out_shardings=self.state_layout)(key)

    def restore_target(self) -> Any:
        """The abstract state, with shardings, that a checkpoint is restored into."""
        abstract = jax.eval_shape(self._make, jax.random.key(0))
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.state_layout)

    @property
    def param_layout(self) -> Any:
        return self.state_layout.params

    def from_saved(self, state: TrainState) -> TrainState:
        return state

    def to_saved(self, state: TrainState) -> TrainState:
        return state

    def set_frozen(self, frozen: nnx.State) -> None:
        """The frozen base weights, read with `frozen_layout`, that every step and evaluation uses."""
        self.frozen = frozen

    def put_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows -> global arrays sharded over the batch axes."""
        return {k: jax.make_array_from_process_local_data(self.batch_layout, v) for k, v in local.items()}

    def step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        with jax.set_mesh(self.mesh):
            return self._step(state, batch, self.frozen)

    def evaluate(self, state: TrainState, batch) -> dict:
        with jax.set_mesh(self.mesh):
            return self._eval(state.params, batch, self.frozen)


class Pmap:
    """Plain data parallelism: state replicated on every local device, gradients summed by psum."""

    def __init__(self, model: Model, tx, run: TrainConfig):
        self._make = functools.partial(init_state, model, tx)
        self.devices = jax.local_devices()
        reduce = functools.partial(jax.lax.psum, axis_name="batch")
        self._step = jax.pmap(train_step(model, tx, run, reduce), axis_name="batch", donate_argnums=0)
        self._eval = jax.pmap(eval_step(model, run, reduce), axis_name="batch")
        self.frozen_layout = None  # the base weights are read onto one device, then replicated by set_frozen
        self.frozen = None

    @property
    def num_devices(self) -> int:
        return jax.device_count()

    @property
    def batch_devices(self) -> int:
        return jax.device_count()

    def _replicate(self, tree):
        """A copy of every array on each local device, stacked on a leading [devices] axis."""
        layout = NamedSharding(Mesh(np.asarray(self.devices), ("batch",)), PartitionSpec("batch"))
        return jax.tree.map(lambda x: jax.device_put(jnp.broadcast_to(x, (len(self.devices), *x.shape)), layout), tree)

    def init(self, key: jax.Array) -> TrainState:
        return self._replicate(jax.jit(self._make)(key))

    def restore_target(self) -> Any:
        return jax.eval_shape(self._make, jax.random.key(0))

    @property
    def param_layout(self) -> None:
        return None  # params are read onto one device, then replicated by from_saved

    def from_saved(self, state: TrainState) -> TrainState:
        return self._replicate(state)

    def to_saved(self, state: TrainState) -> TrainState:
        return jax.tree.map(lambda x: x[0], state)

    def set_frozen(self, frozen: nnx.State) -> None:
        """The frozen base weights LoRA adapts, replicated like the state, for every step and evaluation."""
        self.frozen = self._replicate(frozen)

    def put_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows split evenly over its devices: [devices, rows / devices, L]."""
        return {k: v.reshape(len(self.devices), -1, *v.shape[1:]) for k, v in local.items()}

    def step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        state, metrics = self._step(state, batch, self.frozen)
        return state, jax.tree.map(lambda x: x[0], metrics)

    def evaluate(self, state: TrainState, batch) -> dict:
        return jax.tree.map(lambda x: x[0], self._eval(state.params, batch, self.frozen))
