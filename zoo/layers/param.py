"""Parameters tagged with logical axis names, and the initialisers the layers use."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

AXES = "logical_axes"  # the Variable metadata key holding one logical name per dimension

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def param(key: jax.Array, init: Initializer, shape: Sequence[int], axes: Sequence[str | None], dtype) -> nnx.Param:
    """A parameter of `shape` from `init`, with one logical axis name (e.g. `embed`) per dimension."""
    shape, axes = tuple(shape), tuple(axes)
    if len(shape) != len(axes):
        raise ValueError(f"parameter of shape {shape} needs {len(shape)} axis names, got {axes}")
    return nnx.Param(init(key, shape, dtype), **{AXES: axes})


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
    """The logical axis names of a parameter (all None where it has none)."""
    return variable.get_metadata(AXES, (None,) * len(variable.shape))


def stacked_dims(variable: nnx.Variable) -> int:
    """How many leading dims of a parameter are stacked layers (named `layers`, zoo.models.stack)."""
    axes = logical_axes(variable)
    return next((i for i, name in enumerate(axes) if name != "layers"), len(axes))


def normal(stddev: float) -> Initializer:
    def init(key, shape, dtype):
        return (stddev * jax.random.normal(key, shape, jnp.float32)).astype(dtype)

    return init


def fan_in_normal(fan_in: int) -> Initializer:
    """Normal with variance 1/fan_in, which keeps activations at unit scale through a matmul."""
    return normal(1.0 / math.sqrt(fan_in))


def constant(value: float) -> Initializer:
    def init(key, shape, dtype):
        del key
        return jnp.full(shape, value, dtype)

    return init
