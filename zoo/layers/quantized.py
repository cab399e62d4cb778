"""Weights held quantized (qwix's QArray: int8 per output channel, or NF4 in blocks of 64 along
the input), dequantized where they are used, one layer at a time.

`quantize_weight(w, num_lead, num_in, kind)` quantizes a weight [*lead, *in, *out] (lead: stacked
layers); `project(x, variable, num_in, dtype)` multiplies by a weight held either way. The
product with a quantized weight is rematerialised (jax.checkpoint): a backward pass keeps
the quantized weight, not its dequantized copy, so training through it (QLoRA) holds the
base at its quantized size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import stacked_dims

KINDS = ("int8", "nf4")
NF4_BLOCK = 64  # QLoRA's block of weights sharing one scale


def quantize_weight(weight: jax.Array, num_lead: int, num_in: int, kind: str):
    """weight [*lead, *in, *out] -> a qwix QArray: int8 with a scale per output channel (and per
    lead index), or NF4 with a scale per block of 64 along the last input dim (per output
    channel, lead index and the other input dims)."""
    import qwix

    if kind not in KINDS:
        raise ValueError(f"unknown weight quantization {kind!r}; choose from {', '.join(KINDS)}")
    inputs = range(num_lead, num_lead + num_in)
    if kind == "int8":  # one scale per output channel: the input dims share it
        return qwix.quantize(weight, jnp.int8, channelwise_axes=tuple(i for i in range(weight.ndim) if i not in inputs))
    last_in = inputs[-1]
    block = NF4_BLOCK if weight.shape[last_in] % NF4_BLOCK == 0 else weight.shape[last_in]
    others = tuple(i for i in range(weight.ndim) if i != last_in)
    return qwix.quantize(weight, "nf4", channelwise_axes=others, tiled_axes={last_in: block})


def is_quantized(value) -> bool:
    return hasattr(value, "qvalue") and hasattr(value, "scale")


def dequantized(value, dtype) -> jax.Array:
    """A weight's value in `dtype`, whether held as an array or quantized."""
    if is_quantized(value):
        import qwix

        return qwix.dequantize(value).astype(dtype)
    return value.astype(dtype)


@functools.partial(jax.checkpoint, static_argnums=(2, 3))
def _quantized_product(x, value, num_in: int, dtype):
    return jnp.tensordot(x, dequantized(value, dtype), axes=num_in)


def project(x: jax.Array, weight: nnx.Variable, num_in: int, dtype) -> jax.Array:
    """x [..., *in] times a weight [*in, *out] held as an array or quantized -> [..., *out] in `dtype`."""
    value = weight.get_value()
    if is_quantized(value):
        return _quantized_product(x, value, num_in, jnp.dtype(dtype))
    return jnp.tensordot(x, value.astype(dtype), axes=num_in)


def quantize_linear_weights(module: nnx.Module, kind: str, *, keep: tuple[str, ...] = ("head.unembed",)) -> list[str]:
    """Replaces the weight of every Linear in `module` but those named in `keep` (the output
    projection, by default) by its quantized form; returns the names of those quantized."""
    from zoo.layers.linear import Linear

    names = []
    for path, sub in nnx.iter_modules(module):
        name = ".".join(str(p) for p in path)
        if isinstance(sub, Linear) and name not in keep:
            lead = stacked_dims(sub.weight)
            sub.weight.set_value(quantize_weight(sub.weight.get_value(), lead, sub.num_contracted, kind))
            names.append(name)
    return names


def hold(module: nnx.Module, how: str) -> None:
    """Puts a frozen model's weights in the form `how` names: "as_saved" (unchanged), "bfloat16"
    (every floating-point parameter), or "int8" / "nf4" (quantize_linear_weights)."""
    if how == "bfloat16":
        for _, variable in nnx.iter_graph(module):
            if isinstance(variable, nnx.Param) and jnp.issubdtype(variable.get_value().dtype, jnp.floating):
                variable.set_value(variable.get_value().astype(jnp.bfloat16))
    elif how != "as_saved":
        quantize_linear_weights(module, how)
