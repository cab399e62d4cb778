"""Position-wise feed-forward networks: plain (GELU 4x style) and gated (SwiGLU, GeGLU)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.linear import Linear
from zoo.registry import Registry

ACTIVATIONS: Registry = Registry("activation")
ACTIVATIONS.register("relu")(jax.nn.relu)
ACTIVATIONS.register("gelu")(functools.partial(jax.nn.gelu, approximate=False))
ACTIVATIONS.register("gelu_tanh")(functools.partial(jax.nn.gelu, approximate=True))
ACTIVATIONS.register("silu")(jax.nn.silu)


class FeedForward(nnx.Module):
    """x [..., D] -> [..., D]: down(act(up(x))), or gated: down(act(gate(x)) * up(x)).

    Hidden width F = `hidden_dim`; `activation` is a name in ACTIVATIONS. Gated with
    silu is SwiGLU, with gelu GeGLU.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        *,
        activation: str = "silu",
        gated: bool = True,
        bias: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.activation = activation
        ACTIVATIONS.get(activation)  # fail early on an unknown name
        linear = functools.partial(Linear, bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate = linear(dim, hidden_dim, ("embed", "mlp")) if gated else None
        self.up = linear(dim, hidden_dim, ("embed", "mlp"))
        self.down = linear(hidden_dim, dim, ("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS.get(self.activation)
        hidden = act(self.gate(x)) * self.up(x) if self.gate is not None else act(self.up(x))
        return taps.tap("ffn.output", self.down(taps.tap("ffn.hidden", hidden)))
