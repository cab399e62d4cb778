"""Normalisation over the last dimension: RMSNorm and LayerNorm, computed in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import constant, param
from zoo.registry import Registry

NORMS: Registry[type[nnx.Module]] = Registry("norm")


@NORMS.register("rms")
class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * scale, over the last dim (size `dim`, logical name `axis`)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, axis: str = "embed", dtype=jnp.float32, param_dtype=jnp.float32):
        self.scale = param(None, constant(1.0), (dim,), (axis,), param_dtype)
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


@NORMS.register("layer")
class LayerNorm(nnx.Module):
    """(x - mean) / sqrt(var + eps) * scale + bias, over the last dim (size `dim`)."""

    def __init__(self, dim: int, *, eps: float = 1e-5, axis: str = "embed", dtype=jnp.float32, param_dtype=jnp.float32):
        self.scale = param(None, constant(1.0), (dim,), (axis,), param_dtype)
        self.bias = param(None, constant(0.0), (dim,), (axis,), param_dtype)
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)
