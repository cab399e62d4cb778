"""The experts: E feed-forward networks with stacked weights, run as grouped matmuls."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.lora import LowRank
from zoo.layers.mlp import ACTIVATIONS
from zoo.layers.moe.grouped_matmul import grouped_matmul
from zoo.layers.param import constant, fan_in_normal, param
from zoo.layers.quantized import Quantized, dequantized, quantized_inputs


class ExpertWeights(NamedTuple):
    """The experts' weights in the compute dtype: gate (None when not gated), up [E, D, F],
    down [E, F, D]; with biases gate_bias, up_bias [E, F] and down_bias [E, D], else None;
    with LoRA adapters, (A, B) pairs for gate, up, down ([E, in, r], [E, r, out]; B scaled)."""

    gate: jax.Array | None
    up: jax.Array
    down: jax.Array
    gate_bias: jax.Array | None = None
    up_bias: jax.Array | None = None
    down_bias: jax.Array | None = None
    gate_lora: tuple[jax.Array, jax.Array] | None = None
    up_lora: tuple[jax.Array, jax.Array] | None = None
    down_lora: tuple[jax.Array, jax.Array] | None = None


def clamped_swiglu(gate: jax.Array, up: jax.Array, limit: float, alpha: float) -> jax.Array:
    """gpt-oss's gated unit: (clip(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit)."""
    gate = jnp.minimum(gate, limit)
    return (jnp.clip(up, -limit, limit) + 1) * gate * jax.nn.sigmoid(alpha * gate)


class Experts(nnx.Module):
    """E feed-forwards of width F: down(act(gate(x)) * up(x)) when gated, down(act(up(x))) otherwise.

    Weights: gate, up [E, D, F]; down [E, F, D] (logical axes experts, embed, mlp); with
    `bias`, a bias after each of them (gpt-oss). With `swiglu_limit`, the gated unit is
    clamped_swiglu (gpt-oss; gated silu only, `swiglu_alpha` its sigmoid gain).
    """

    def __init__(
        self,
        num_experts: int,
        dim: int,
        hidden_dim: int,
        *,
        activation: str = "silu",
        gated: bool = True,
        bias: bool = False,
        swiglu_limit: float | None = None,
        swiglu_alpha: float = 1.702,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        ACTIVATIONS.get(activation)
        if swiglu_limit is not None and (not gated or activation != "silu"):
            raise ValueError(f"the clamped SwiGLU is a gated silu; got gated={gated}, activation={activation!r}")
        make = functools.partial(param, dtype=param_dtype)
        shape_in, shape_out = (num_experts, dim, hidden_dim), (num_experts, hidden_dim, dim)
        self.gate = make(rngs.params(), fan_in_normal(dim), shape_in, ("experts", "embed", "mlp")) if gated else None
        self.up = make(rngs.params(), fan_in_normal(dim), shape_in, ("experts", "embed", "mlp"))
        self.down = make(rngs.params(), fan_in_normal(hidden_dim), shape_out, ("experts", "mlp", "embed"))
        zeros = lambda width, axis: make(None, constant(0.0), (num_experts, width), ("experts", axis)) if bias else None
        self.gate_bias = zeros(hidden_dim, "mlp") if gated else None
        self.up_bias, self.down_bias = zeros(hidden_dim, "mlp"), zeros(dim, "embed")
        self.activation, self.dtype = activation, dtype
        self.swiglu_limit, self.swiglu_alpha = swiglu_limit, swiglu_alpha
        self.gate_lora: LowRank | None = None  # LoRA adapters [E, D, r] x [E, r, F] (zoo.layers.lora.attach)
        self.up_lora: LowRank | None = None
        self.down_lora: LowRank | None = None

    @property
    def num_experts(self) -> int:
        return self.up.shape[0]

    def weights(self) -> ExpertWeights:
        """The weights in the compute dtype; quantized matrices (zoo.layers.quantized) as they are held,
        dequantized where they are used."""
        cast = lambda w: None if w is None else w[...].astype(self.dtype)
        held = lambda w: None if w is None else w.get_value() if isinstance(w.get_value(), Quantized) else cast(w)
        pair = lambda lora: None if lora is None else (cast(lora.a), lora.scale * cast(lora.b))
        return ExpertWeights(
            *(held(w) for w in (self.gate, self.up, self.down)),
            *(cast(w) for w in (self.gate_bias, self.up_bias, self.down_bias)),
            *(pair(lora) for lora in (self.gate_lora, self.up_lora, self.down_lora)),
        )

    def _ffn(self, matmul, per_row, x, weights: ExpertWeights | None):
        """matmul(rows, w [E, in, out]) -> each row times its expert's w; per_row(b [E, out]) ->
        each row's expert's bias. With quantized matrices the whole is rematerialised, so a backward
        pass keeps them quantized (as zoo.layers.quantized.project does)."""
        w = self.weights() if weights is None else weights
        if any(isinstance(m, Quantized) for m in (w.gate, w.up, w.down)):
            return jax.checkpoint(lambda x, w: self._apply(matmul, per_row, x, w))(x, w)
        return self._apply(matmul, per_row, x, w)

    def _apply(self, matmul, per_row, x, w: ExpertWeights):
        def project(rows, matrix, bias, lora):
            out = matmul(rows, matrix)
            if lora is not None:  # (rows A) B, B already scaled
                out = out + matmul(matmul(rows, lora[0]), lora[1])
            return out if bias is None else out + per_row(bias)

        up = project(x, w.up, w.up_bias, w.up_lora)
        act = ACTIVATIONS.get(self.activation)
        if w.gate is None:
            hidden = act(up)
        elif self.swiglu_limit is None:
            hidden = act(project(x, w.gate, w.gate_bias, w.gate_lora)) * up
        else:
            hidden = clamped_swiglu(project(x, w.gate, w.gate_bias, w.gate_lora), up, self.swiglu_limit, self.swiglu_alpha)
        return project(hidden, w.down, w.down_bias, w.down_lora)

    def grouped(self, x: jax.Array, group_sizes: jax.Array, weights: ExpertWeights | None = None) -> jax.Array:
        """x [M, D] sorted by expert, group_sizes [E] rows per expert -> [M, D] (grouped matmuls:
        megablox's kernel on TPUs, jax.lax.ragged_dot elsewhere).

        weights: the ExpertWeights to use instead of this module's own, e.g. one device's
        share of the experts; E is then their number. Rows past the groups come back as
        zeros, or with biases as their last expert's bias (callers drop them)."""
        expert_of_row = jnp.repeat(jnp.arange(group_sizes.shape[0]), group_sizes, total_repeat_length=x.shape[0])

        def matmul(a, w):
            if _takes_int8_inputs(w):
                import qwix

                return qwix.ragged_dot(quantized_inputs(a, w, 1), w.weight, group_sizes, preferred_element_type=self.dtype)
            return grouped_matmul(a, dequantized(w, self.dtype), group_sizes)

        return self._ffn(matmul, lambda b: b[expert_of_row], x.astype(self.dtype), weights)

    def batched(self, x: jax.Array) -> jax.Array:
        """x [E, C, D], each expert's own slots -> [E, C, D]."""

        def matmul(a, w):
            if _takes_int8_inputs(w):
                import qwix

                return qwix.einsum("ecd,edf->ecf", quantized_inputs(a, w, 2), w.weight, preferred_element_type=self.dtype)
            return jnp.einsum("ecd,edf->ecf", a, dequantized(w, self.dtype))

        return self._ffn(matmul, lambda b: b[:, None], x.astype(self.dtype), None)


def _takes_int8_inputs(w) -> bool:
    """Whether a matrix is held for products that quantize their inputs too (w8a8)."""
    return isinstance(w, Quantized) and w.inputs is not None
