"""Small test utilities."""

import functools

import jax
from flax import nnx

from zoo import config
from zoo.models import wiring


def jitted(module: nnx.Module):
    """Calls of `module` under jax.jit (one compile per input shape), with its params as they are at each call."""
    graphdef = nnx.graphdef(module)

    @functools.partial(jax.jit, static_argnames=("causal", "aligned"))
    def run(state, *args, **kwargs):
        return nnx.merge(graphdef, state)(*args, **kwargs)

    return lambda *args, **kwargs: run(nnx.state(module), *args, **kwargs)


def position_scheme(kind: str, **fields):
    """The position scheme a config's `[model.position]` section builds, for 16-wide heads (4 of them) and 32 positions."""
    cfg = config.PositionConfig.from_dict({"kind": kind, **fields})
    return wiring.position_scheme(cfg, dim=16, num_heads=4, max_positions=32, causal=True, rngs=nnx.Rngs(0))
