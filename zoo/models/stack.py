"""Layers stacked into one module with a leading `layers` axis, and run by jax.lax.scan.

Scanning traces and compiles one layer however deep the model is; unrolling (for
profiling or small models) runs the same stacked parameters, so checkpoints do not
depend on the choice. While a forward pass is recorded (zoo.layers.taps), the layers run
one by one in Python, so that their taps hold concrete values.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention.chunked import ATTENTION_LSE, ATTENTION_OUT
from zoo.layers.param import AXES

M = TypeVar("M", bound=nnx.Module)
T = TypeVar("T")

_policies = jax.checkpoint_policies
# The chunked attention kernel's output and log-normaliser (its backward's residuals) are kept
# wherever matmul outputs are: recomputing them would replay its forward and keep its logits.
_attention_residuals = _policies.save_only_these_names(ATTENTION_OUT, ATTENTION_LSE)
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": _policies.nothing_saveable,
    "dots": _policies.save_from_both_policies(_policies.dots_saveable, _attention_residuals),
    "dots_no_batch": _policies.save_from_both_policies(_policies.dots_with_no_batch_dims_saveable, _attention_residuals),
}


def stack(make: Callable[[nnx.Rngs], M], num_layers: int, rngs: nnx.Rngs) -> M:
    """One module whose every parameter is `num_layers` independently initialised copies [L, ...]."""
    keys = jax.random.split(rngs.params(), num_layers)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
    state = jax.vmap(lambda key: nnx.state(make(nnx.Rngs(key))))(keys)

    def name_layers_axis(variable: nnx.Variable) -> nnx.Variable:
        inner = variable.get_metadata(AXES, (None,) * (len(variable.shape) - 1))
        variable.set_metadata(AXES, ("layers", *inner))
        return variable

    state = jax.tree.map(name_layers_axis, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, state)


def scan_layers(
    layers: nnx.Module,
    body: Callable[[nnx.Module, Any, Any], tuple[Any, Any]],
    carry: Any,
    per_layer: Any = None,
    *,
    remat: str = "none",
    unroll: bool = False,
) -> tuple[Any, Any]:
    """Runs `body(layer, carry, per_layer[i]) -> (carry, out_i)` over the stacked layers.

    `per_layer` is a pytree with a leading [L] axis (e.g. a stacked KV cache) or None;
    returns the final carry and the outputs stacked along [L]. `remat` names a policy in
    REMAT_POLICIES; `unroll` unrolls the loop instead of scanning.
    """
    graphdef, state = nnx.split(layers)
    num_layers = jax.tree.leaves(state)[0].shape[0]
    if taps.active():
        return _one_by_one(graphdef, state, body, carry, per_layer, num_layers)

    def step(carry, xs):
        layer_state, layer_input = xs
        return body(nnx.merge(graphdef, layer_state), carry, layer_input)

    policy = REMAT_POLICIES[remat]
    if remat != "none":
        step = jax.checkpoint(step, policy=policy, prevent_cse=False)
    return jax.lax.scan(step, carry, (state, per_layer), unroll=num_layers if unroll else 1)


def _one_by_one(graphdef, state, body, carry, per_layer, num_layers):
    """scan_layers as a Python loop over the layers, outputs stacked as jax.lax.scan stacks them."""
    outs = []
    for index in range(num_layers):
        layer_state, layer_input = jax.tree.map(lambda a: a[index], (state, per_layer))
        carry, out = body(nnx.merge(graphdef, layer_state), carry, layer_input)
        outs.append(out)
    return carry, jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def period(items: Sequence[T]) -> tuple[T, ...]:
    """The shortest run of items that `items` repeats (all of them if none shorter)."""
    for length in range(1, len(items) + 1):
        if len(items) % length == 0 and all(item == items[i % length] for i, item in enumerate(items)):
            return tuple(items[:length])
    return tuple(items)
