"""Low-rank adapters (LoRA, Hu et al. 2021): a frozen weight W used as W + (alpha / r) A B.

An adapter is an `nnx.LoRAParam` pair beside the weight it adapts, inside the same module:
A [*lead, *in, r] starts uniform in +-1 / sqrt(fan_in) and B [*lead, r, *out] at zero (as
PEFT does), so an adapted model starts as its base. The layers add (alpha / r) (x A) B to
x W, never forming A B, so a step's backward computes no gradient for W. `lead` are the
dims the weight has before its own (`layers` of a stacked model, `experts`); A and B
carry the weight's logical axis names, with `lora_rank` for r, and shard like it.

`attach(module, rank, alpha, targets, rngs)` adds adapters to the weights whose names
match `targets` (see `adaptable`).
"""

from __future__ import annotations

import fnmatch
import math
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers.param import AXES, logical_axes, stacked_dims

RANK_AXIS = "lora_rank"


class DropoutKey(nnx.Variable):
    """The PRNG key data [*lead, key] of an adapter's dropout, drawn afresh for every training step
    (fresh_dropout_keys); only a model built for training has them."""


class LowRank(nnx.Module):
    """The update (alpha / rank) A B of a weight [*lead, *in, *out]: a [*lead, *in, r], b [*lead, r, *out].
    With `dropout`, the input is dropped at that rate (and scaled up) on its way into A."""

    def __init__(
        self, weight: nnx.Variable, num_in: int, num_lead: int, rank: int, alpha: float, key: jax.Array, dropout: float = 0.0
    ):
        shape, axes = tuple(weight.shape), logical_axes(weight)
        lead, inner = shape[:num_lead], shape[num_lead:]
        in_shape, out_shape = inner[:num_in], inner[num_in:]
        if rank > min(math.prod(in_shape), math.prod(out_shape)):
            raise ValueError(f"rank {rank} exceeds the smaller side of a {list(in_shape)} x {list(out_shape)} weight")
        bound = 1.0 / math.sqrt(math.prod(in_shape))
        a = jax.random.uniform(key, (*lead, *in_shape, rank), jnp.float32, -bound, bound)
        self.a = nnx.LoRAParam(a, **{AXES: (*axes[: num_lead + num_in], RANK_AXIS)})
        self.b = nnx.LoRAParam(jnp.zeros((*lead, rank, *out_shape), jnp.float32), **{AXES: (*axes[:num_lead], RANK_AXIS, *axes[num_lead + num_in :])})
        self.num_in, self.rank, self.scale, self.dropout = num_in, rank, alpha / rank, dropout
        key_shape = jax.random.key_data(jax.random.key(0)).shape
        self.dropout_key = DropoutKey(jnp.zeros((*lead, *key_shape), jnp.uint32)) if dropout > 0 else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., *in] -> scale * (x A) B [..., *out] (one weight: no lead dims), in x's dtype."""
        if self.dropout_key is not None:
            kept = jax.random.bernoulli(jax.random.wrap_key_data(self.dropout_key[...]), 1.0 - self.dropout, x.shape)
            x = jnp.where(kept, x / (1.0 - self.dropout), 0).astype(x.dtype)
        low = jnp.tensordot(x, self.a[...].astype(x.dtype), axes=self.num_in)
        return self.scale * jnp.tensordot(low, self.b[...].astype(x.dtype), axes=1)

    def delta(self) -> jax.Array:
        """scale * A B [*lead, *in, *out], float32: what merging adds to the weight."""
        a, b = self.a[...], self.b[...]
        rank = a.shape[-1]
        lead = a.shape[: a.ndim - self.num_in - 1]
        in_shape, out_shape = a.shape[len(lead) : -1], b.shape[len(lead) + 1 :]
        flat = jnp.matmul(a.reshape(*lead, -1, rank), b.reshape(*lead, rank, -1))
        return self.scale * flat.reshape(*lead, *in_shape, *out_shape)


def adaptable(module: nnx.Module) -> Iterator[tuple[str, nnx.Module, str, int, int]]:
    """Every weight an adapter can take: (name, its module, the attribute holding the weight,
    how many of its dims are inputs, how many lead the weight's own). Names are module paths
    ("tower.layers.attention.q") with the weight's attribute for modules of several
    ("tower.layers.ffn.experts.up")."""
    from zoo.layers.embedding import Embedding
    from zoo.layers.linear import Linear
    from zoo.layers.moe.experts import Experts

    for path, sub in nnx.iter_modules(module):
        name = ".".join(str(p) for p in path)
        if isinstance(sub, Linear):
            yield name, sub, "weight", sub.num_contracted, stacked_dims(sub.weight)
        elif isinstance(sub, Embedding):
            yield name, sub, "table", 1, stacked_dims(sub.table)
        elif isinstance(sub, Experts):
            for attr in ("gate", "up", "down"):
                if getattr(sub, attr) is not None:
                    yield f"{name}.{attr}", sub, attr, 1, stacked_dims(getattr(sub, attr)) + 1


def matches(name: str, pattern: str) -> bool:
    """A glob `pattern` matches a weight's name, or the end of it after a dot ("attention.q",
    "ffn.*" and "*.q" all match "tower.layers.attention.q")."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def attach(
    module: nnx.Module, rank: int, alpha: float, targets: Sequence[str], rngs: nnx.Rngs, dropout: float = 0.0
) -> list[str]:
    """Adds an adapter of `rank` to every weight of `module` whose name matches one of `targets`;
    returns their names. ValueError for a pattern that matches no weight (naming some that
    exist) and for a rank above a weight's smaller side. `dropout` applies to the adapters of
    linear layers (as PEFT's, whose embedding adapters have none; experts' neither)."""
    from zoo.layers.linear import Linear

    weights = list(adaptable(module))
    for pattern in targets:
        if not any(matches(name, pattern) for name, *_ in weights):
            names = ", ".join(name for name, *_ in weights[:6])
            raise ValueError(f"the LoRA target {pattern!r} matches no weight; weights that take adapters: {names}, ...")
    chosen = []
    for name, sub, attr, num_in, num_lead in weights:
        if any(matches(name, pattern) for pattern in targets):
            try:
                rate = dropout if isinstance(sub, Linear) else 0.0
                adapter = LowRank(getattr(sub, attr), num_in, num_lead, rank, alpha, rngs.params(), rate)
            except ValueError as error:
                raise ValueError(f"LoRA on {name}: {error}") from None
            setattr(sub, f"{attr}_lora", nnx.data(adapter))  # declared None (static) in the layer
            chosen.append(name)
    return chosen


def merge(module: nnx.Module) -> list[str]:
    """Adds each adapter's update into the weight it adapts (in that weight's dtype) and removes the
    adapter, so `nnx.state(module)` is the base model's params; returns the merged weights' names."""
    merged = []
    for name, sub, attr, *_ in list(adaptable(module)):
        lora = getattr(sub, f"{attr}_lora")
        if lora is not None:
            weight = getattr(sub, attr)
            weight[...] = (weight[...].astype(jnp.float32) + lora.delta()).astype(weight.dtype)
            setattr(sub, f"{attr}_lora", None)
            merged.append(name)
    return merged


def fresh_dropout_keys(keys: nnx.State, key: jax.Array) -> nnx.State:
    """`keys` (a State of DropoutKey, as a model built for training holds them) drawn anew from `key`:
    every adapter, and every stacked layer of it, its own."""
    leaves, treedef = jax.tree.flatten(keys)
    fresh = [jax.random.key_data(jax.random.split(jax.random.fold_in(key, i), leaf.shape[:-1])) for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(treedef, fresh)
