"""Linear maps between shaped features (e.g. D -> H x Dh for the query projection)."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.lora import LowRank
from zoo.layers.param import constant, fan_in_normal, param
from zoo.layers.quantized import dequantized, project


class Linear(nnx.Module):
    """y = x W (+ b), contracting the last len(in_shape) dims of x.

    x: [..., *in_shape] -> y: [..., *out_shape]; W: [*in_shape, *out_shape] with logical
    `axes` (one name per dim of W), b: [*out_shape]. With a LoRA adapter (`weight_lora`,
    zoo.layers.lora.attach) y gains its low-rank term; W may be held quantized (zoo.layers.quantized).
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        axes: Sequence[str | None],
        *,
        bias: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        init = fan_in_normal(math.prod(in_shape))
        self.weight = param(rngs.params(), init, in_shape + out_shape, axes, param_dtype)
        self.bias = (
            param(rngs.params(), constant(0.0), out_shape, tuple(axes)[len(in_shape):], param_dtype)
            if bias
            else None
        )
        self.num_contracted = len(in_shape)
        self.dtype = dtype
        self.weight_lora: LowRank | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = project(x, self.weight, self.num_contracted, self.dtype)
        if self.weight_lora is not None:
            y = y + self.weight_lora(x)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y

    def merged_weight(self) -> jax.Array:
        """W [*in_shape, *out_shape] in the compute dtype, with the adapter's update added."""
        weight = dequantized(self.weight.get_value(), jnp.float32)
        if self.weight_lora is not None:
            weight = weight + self.weight_lora.delta()
        return weight.astype(self.dtype)
