"""Small test utilities."""

import functools

import jax
from flax import nnx


def jitted(module: nnx.Module):
    """Calls of `module` under jax.jit (one compile per input shape), with its params as they are at each call."""
    graphdef = nnx.graphdef(module)

    @functools.partial(jax.jit, static_argnames=("causal", "aligned"))
    def run(state, *args, **kwargs):
        return nnx.merge(graphdef, state)(*args, **kwargs)

    return lambda *args, **kwargs: run(nnx.state(module), *args, **kwargs)
