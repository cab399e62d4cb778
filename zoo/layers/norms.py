"""Normalisation over the last dimension(s): RMSNorm, LayerNorm and OLMo's LayerNorm without
parameters, computed in float32."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import constant, param
from zoo.registry import Registry

NORMS: Registry[type[nnx.Module]] = Registry("norm")


@NORMS.register("rms")
class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * scale over the last dim (size `dim`, logical name `axis`),
    or jointly over the last len(dim) dims when `dim` and `axis` are tuples (OLMo 2's QK-norm
    over all heads of a projection, [.., H, Dh]: the mean sums over the heads too)."""

    def __init__(
        self, dim: int | Sequence[int], *, eps: float = 1e-6, axis: str | Sequence[str] = "embed",
        dtype=jnp.float32, param_dtype=jnp.float32,
    ):
        shape, axes = ((dim,), (axis,)) if isinstance(dim, int) else (tuple(dim), tuple(axis))
        self.scale = param(None, constant(1.0), shape, axes, param_dtype)
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        over = tuple(range(-self.scale.ndim, 0))
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=over, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


def standardise(x: jax.Array, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) over the last dim, in float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


@NORMS.register("layer")
class LayerNorm(nnx.Module):
    """(x - mean) / sqrt(var + eps) * scale + bias, over the last dim (size `dim`)."""

    def __init__(self, dim: int, *, eps: float = 1e-5, axis: str = "embed", dtype=jnp.float32, param_dtype=jnp.float32):
        self.scale = param(None, constant(1.0), (dim,), (axis,), param_dtype)
        self.bias = param(None, constant(0.0), (dim,), (axis,), param_dtype)
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = standardise(x, self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)


@NORMS.register("layer_without_params")
class ParameterFreeLayerNorm(nnx.Module):
    """(x - mean) / sqrt(var + eps) over the last dim, with no scale and no bias (OLMo 1).
    `dim`, `axis` and `param_dtype` are taken as every norm takes them, and hold nothing."""

    def __init__(self, dim: int, *, eps: float = 1e-5, axis: str = "embed", dtype=jnp.float32, param_dtype=jnp.float32):
        del dim, axis, param_dtype
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return standardise(x, self.eps).astype(self.dtype)
