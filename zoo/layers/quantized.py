"""Weights held quantized through qwix (Google's quantization library for JAX), dequantized or
multiplied in int8 where they are used, one layer at a time.

Schemes (SCHEMES): "int8" and "fp8" (float8 e4m3), a scale per output channel; "nf4", QLoRA's
4-bit NormalFloat with a scale per block of 64 along the input; all weight-only (the product
dequantizes the weight to the compute dtype). "w8a8": int8 weights, and each input row
quantized to int8 as it comes, the product taken in int8 with int32 sums (qwix.dot_general).

`quantize_weight(w, num_lead, num_in, scheme)` quantizes a weight [*lead, *in, *out] (lead:
stacked layers) into a `Quantized`; `project(x, variable, num_in, dtype)` multiplies by a
weight held either way. A product with a quantized weight is rematerialised
(jax.checkpoint): a backward pass keeps the quantized weight, not its dequantized copy, so
training through it (QLoRA) holds the base at its quantized size.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import stacked_dims

NF4_BLOCK = 64  # QLoRA's block of weights sharing one scale
KEPT = ("head.unembed",)  # linear layers left unquantized: the output projection
SCHEMES = {  # name: (the weight's qwix type, the inputs' type or None)
    "int8": (jnp.int8, None),
    "w8a8": (jnp.int8, jnp.int8),
    "fp8": (jnp.float8_e4m3fn, None),
    "nf4": ("nf4", None),
}


@flax.struct.dataclass
class Quantized:
    """A weight as a qwix QArray (its values and scales), and the type its products quantize inputs
    to (None: the weight is dequantized instead)."""

    weight: object  # qwix.QArray
    inputs: object = flax.struct.field(pytree_node=False, default=None)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.weight.shape


def quantize_weight(weight: jax.Array, num_lead: int, num_in: int, scheme: str) -> Quantized:
    """weight [*lead, *in, *out] -> Quantized: per output channel (and lead index), the input dims
    sharing a scale; NF4 a scale per block of 64 along the last input dim."""
    import qwix

    if scheme not in SCHEMES:
        raise ValueError(f"unknown weight quantization {scheme!r}; choose from {', '.join(SCHEMES)}")
    qtype, inputs = SCHEMES[scheme]
    input_dims = range(num_lead, num_lead + num_in)
    if scheme != "nf4":
        per_channel = tuple(i for i in range(weight.ndim) if i not in input_dims)
        return Quantized(qwix.quantize(weight, qtype, channelwise_axes=per_channel), inputs)
    last_in = input_dims[-1]
    block = NF4_BLOCK if weight.shape[last_in] % NF4_BLOCK == 0 else weight.shape[last_in]
    others = tuple(i for i in range(weight.ndim) if i != last_in)
    return Quantized(qwix.quantize(weight, "nf4", channelwise_axes=others, tiled_axes={last_in: block}), inputs)


def dequantized(value, dtype) -> jax.Array:
    """A weight's value in `dtype`, whether held as an array or Quantized."""
    if isinstance(value, Quantized):
        import qwix

        return qwix.dequantize(value.weight).astype(dtype)
    return value.astype(dtype)


def quantized_inputs(x: jax.Array, value: Quantized, num_rows: int):
    """x [*rows, *in] as the qwix QArray a product with `value` (w8a8's) takes: each row (the
    first `num_rows` dims) quantized to value.inputs with its own scale."""
    import qwix

    return qwix.quantize(x.astype(jnp.float32), value.inputs, channelwise_axes=tuple(range(num_rows)))


@functools.partial(jax.checkpoint, static_argnums=(2, 3))
def _quantized_product(x, value: Quantized, num_in: int, dtype):
    if value.inputs is None:
        return jnp.tensordot(x, dequantized(value, dtype), axes=num_in)
    import qwix

    contracted = (tuple(range(x.ndim - num_in, x.ndim)), tuple(range(num_in)))
    x_quantized = quantized_inputs(x, value, x.ndim - num_in)
    return qwix.dot_general(x_quantized, value.weight, (contracted, ((), ()))).astype(dtype)


def project(x: jax.Array, weight: nnx.Variable, num_in: int, dtype) -> jax.Array:
    """x [..., *in] times a weight [*in, *out] held as an array or Quantized -> [..., *out] in `dtype`."""
    value = weight.get_value()
    if isinstance(value, Quantized):
        return _quantized_product(x, value, num_in, jnp.dtype(dtype))
    return jnp.tensordot(x, value.astype(dtype), axes=num_in)


def quantizable(module: nnx.Module, keep: tuple[str, ...] = KEPT):
    """(name, weight variable, lead dims, input dims) of every weight a scheme quantizes: each
    Linear's but those named in `keep` (the output projection), and the experts' gate, up and down."""
    from zoo.layers.linear import Linear
    from zoo.layers.moe.experts import Experts

    for path, sub in nnx.iter_modules(module):
        name = ".".join(str(p) for p in path)
        if isinstance(sub, Linear) and name not in keep:
            yield name, sub.weight, stacked_dims(sub.weight), sub.num_contracted
        elif isinstance(sub, Experts):
            for attr in ("gate", "up", "down"):
                weight = getattr(sub, attr)
                if weight is not None:
                    yield f"{name}.{attr}", weight, stacked_dims(weight) + 1, 1


def quantize_weights(module: nnx.Module, scheme: str) -> list[str]:
    """Replaces every quantizable weight of `module` (see quantizable) by its quantized form; returns
    their names. Embeddings, norms and the output projection stay as they are."""
    names = []
    for name, weight, num_lead, num_in in list(quantizable(module)):
        weight.set_value(quantize_weight(weight.get_value(), num_lead, num_in, scheme))
        names.append(name)
    return names


def hold(module: nnx.Module, how: str) -> None:
    """Puts a model's weights in the form `how` names: "as_saved" (unchanged), "bfloat16" (every
    floating-point parameter), or a scheme of SCHEMES (quantize_weights)."""
    if how == "bfloat16":
        for _, variable in nnx.iter_graph(module):
            if isinstance(variable, nnx.Param) and jnp.issubdtype(variable.get_value().dtype, jnp.floating):
                variable.set_value(variable.get_value().astype(jnp.bfloat16))
    elif how != "as_saved":
        quantize_weights(module, how)


def weight_bytes(shape: tuple[int, ...], num_lead: int, num_in: int, scheme: str | None) -> int:
    """Bytes of a weight [*lead, *in, *out] held in `scheme` (None: float32), its scales (float32) included."""
    size = math.prod(shape)
    if scheme is None:
        return 4 * size
    inputs = math.prod(shape[num_lead : num_lead + num_in])
    if scheme == "nf4":
        last_in = shape[num_lead + num_in - 1]
        block = NF4_BLOCK if last_in % NF4_BLOCK == 0 else last_in
        return size // 2 + 4 * (size // block)
    return size + 4 * (size // inputs)


def to_storage(tree):
    """`tree` with every 4-bit array (NF4 values) packed two to a byte, flat: the form checkpoints
    hold (orbax writes no 4-bit dtype)."""
    def pack(x):
        if getattr(x, "dtype", None) != jnp.uint4:
            return x
        flat = jnp.ravel(x).astype(jnp.uint8)
        flat = jnp.pad(flat, (0, flat.size % 2))
        return flat[0::2] | (flat[1::2] << 4)

    return jax.tree.map(pack, tree)


def storage_shapes(abstract):
    """The shapes and dtypes `to_storage` gives a tree of these abstract arrays."""
    return jax.eval_shape(to_storage, abstract)


def from_storage(stored, abstract):
    """Undoes `to_storage`: each packed array back to the shape and 4-bit dtype `abstract` has there."""
    def unpack(x, like):
        if like.dtype != jnp.uint4:
            return x
        pairs = jnp.stack([x & 15, x >> 4], axis=-1).reshape(-1)
        return pairs[: math.prod(like.shape)].reshape(like.shape).astype(jnp.uint4)

    return jax.tree.map(unpack, stored, abstract)
