"""The experts: E feed-forward networks with stacked weights, run as grouped matmuls."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.mlp import ACTIVATIONS
from zoo.layers.param import fan_in_normal, param


class Experts(nnx.Module):
    """E feed-forwards of width F: down(act(gate(x)) * up(x)) when gated, down(act(up(x))) otherwise.

    Weights: gate, up [E, D, F]; down [E, F, D] (logical axes experts, embed, mlp).
    """

    def __init__(
        self,
        num_experts: int,
        dim: int,
        hidden_dim: int,
        *,
        activation: str = "silu",
        gated: bool = True,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        ACTIVATIONS.get(activation)
        make = functools.partial(param, dtype=param_dtype)
        shape_in, shape_out = (num_experts, dim, hidden_dim), (num_experts, hidden_dim, dim)
        self.gate = make(rngs.params(), fan_in_normal(dim), shape_in, ("experts", "embed", "mlp")) if gated else None
        self.up = make(rngs.params(), fan_in_normal(dim), shape_in, ("experts", "embed", "mlp"))
        self.down = make(rngs.params(), fan_in_normal(hidden_dim), shape_out, ("experts", "mlp", "embed"))
        self.activation, self.dtype = activation, dtype

    @property
    def num_experts(self) -> int:
        return self.up.shape[0]

    def weights(self) -> tuple[jax.Array | None, jax.Array, jax.Array]:
        """(gate or None, up, down) in the compute dtype."""
        cast = lambda w: None if w is None else w[...].astype(self.dtype)
        return cast(self.gate), cast(self.up), cast(self.down)

    def _ffn(self, matmul, x, weights):
        act = ACTIVATIONS.get(self.activation)
        gate, up, down = self.weights() if weights is None else weights
        hidden = act(matmul(x, gate)) * matmul(x, up) if gate is not None else act(matmul(x, up))
        return matmul(hidden, down)

    def grouped(self, x: jax.Array, group_sizes: jax.Array, weights=None) -> jax.Array:
        """x [M, D] sorted by expert, group_sizes [E] rows per expert -> [M, D] (jax.lax.ragged_dot).

        weights: the (gate, up, down) to use instead of this module's own, e.g. one device's
        share of the experts; E is then their number."""
        return self._ffn(lambda a, w: jax.lax.ragged_dot(a, w, group_sizes), x.astype(self.dtype), weights)

    def batched(self, x: jax.Array) -> jax.Array:
        """x [E, C, D], each expert's own slots -> [E, C, D]."""
        return self._ffn(lambda a, w: jnp.einsum("ecd,edf->ecf", a, w), x.astype(self.dtype), None)
