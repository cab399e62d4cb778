"""The machinery every Hugging Face family shares: rules between tensors and params.

A Rule pairs one Hugging Face tensor name (with `{layer}` and, for experts, `{expert}`)
with one or more zoo param paths and the reshapes between the layouts: Hugging Face
stores linear weights as [out, in] (GPT-2's Conv1D as [in, out]) and fuses some
projections; zoo keeps [in, *out] with heads split out. A family's Layout lists the
model-level rules and, per tower, the rules of one layer (LayerRules);
wiring.layer_locations places each layer in the tower's stacks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from zoo.config import ModelConfig
from zoo.models import Model
from zoo.models.block import LayerSpec
from zoo.models.wiring import layer_locations, layer_specs

Array = np.ndarray
Path = tuple[str, ...]


class HFConfigError(ValueError):
    """A Hugging Face config or checkpoint zoo cannot represent."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """hf: the tensor name; zoo: the param paths it holds; to_zoo: tensor -> one array per
    path; to_hf: the arrays -> tensor."""

    hf: str
    zoo: tuple[Path, ...]
    to_zoo: Callable[[Array], tuple[Array, ...]]
    to_hf: Callable[..., Array]


def layer_norm(hf: str, zoo: Path) -> list[Rule]:
    """A LayerNorm's hf.weight / hf.bias <-> zoo/scale, zoo/bias."""
    return [same(f"{hf}.weight", (*zoo, "scale")), same(f"{hf}.bias", (*zoo, "bias"))]


def same(hf: str, zoo: Path) -> Rule:
    return Rule(hf, (zoo,), lambda w: (w,), lambda w: w)


def transposed(hf: str, zoo: Path) -> Rule:
    """A [out, in] matrix <-> zoo's [in, out]."""
    return Rule(hf, (zoo,), lambda w: (w.T,), lambda w: w.T)


def shifted(hf: str, zoo: Path, offset: float) -> Rule:
    """A norm stored as scale - offset (Gemma's 1 + w) <-> zoo's scale."""
    return Rule(hf, (zoo,), lambda w: (w + offset,), lambda w: w - offset)


def scaled(rule: Rule, factor: float | Array) -> Rule:
    """`rule` reading its tensor times `factor` (a number, or an array broadcasting against the
    tensor): a family's constant multiplier folded into the weight on import. Exported, the
    weight stays folded, under a config whose multiplier is 1."""
    return Rule(rule.hf, rule.zoo, lambda w: rule.to_zoo(np.asarray(w, np.float32) * factor), rule.to_hf)


def heads_in(hf: str, zoo: Path, heads: int, head_dim: int) -> Rule:
    """A q/k/v projection [heads * Dh, D] <-> [D, heads, Dh]."""
    return Rule(hf, (zoo,), lambda w: (w.T.reshape(-1, heads, head_dim),), lambda w: w.reshape(w.shape[0], -1).T)


def heads_out(hf: str, zoo: Path, heads: int, head_dim: int) -> Rule:
    """An output projection [D, heads * Dh] <-> [heads, Dh, D]."""
    return Rule(hf, (zoo,), lambda w: (w.T.reshape(heads, head_dim, -1),), lambda w: w.reshape(heads * head_dim, -1).T)


def head_bias(hf: str, zoo: Path, heads: int, head_dim: int) -> Rule:
    """A vector over the heads [heads * Dh] (a q/k/v bias, or OLMo 2's QK-norm scale) <-> [heads, Dh]."""
    return Rule(hf, (zoo,), lambda b: (b.reshape(heads, head_dim),), lambda b: b.reshape(-1))


def rope_halves(rope_dim: int) -> np.ndarray:
    """The order that turns interleaved RoPE pairs (x0 y0 x1 y1 ...) into halves (x0 x1 ... y0 y1 ...)."""
    return np.concatenate([np.arange(0, rope_dim, 2), np.arange(1, rope_dim, 2)])


def fused_qkv(hf: str, zoo: tuple[Path, Path, Path], kv_heads: int, group: int, head_dim: int, *, rows_out: bool = True) -> Rule:
    """One q/k/v tensor laid out per key/value head as [group queries, key, value] x Dh rows
    (Falcon; BLOOM with group 1), weight [rows, D] (or [D, rows] when not `rows_out`) or
    bias [rows] <-> zoo's q [.., K * group, Dh], k and v [.., K, Dh]."""

    def split(w):
        w = w.T if rows_out and w.ndim == 2 else w  # -> [D, rows] or [rows]
        lead = w.shape[:-1]
        blocks = w.reshape(*lead, kv_heads, group + 2, head_dim)
        q = blocks[..., :group, :].reshape(*lead, kv_heads * group, head_dim)
        return q, blocks[..., group, :], blocks[..., group + 1, :]

    def join(q, k, v):
        lead = q.shape[:-2]
        q = q.reshape(*lead, kv_heads, group, head_dim)
        fused = np.concatenate([q, k[..., None, :], v[..., None, :]], axis=-2).reshape(*lead, -1)
        return fused.T if rows_out and fused.ndim == 2 else fused

    return Rule(hf, zoo, split, join)


def side_by_side(hf: str, zoo: tuple[Path, ...], shapes: Sequence[tuple[int, ...]], *, rows_out: bool = True) -> Rule:
    """One tensor holding several params' outputs one after another: q | k | v (Phi-3's
    qkv_proj, GPT-2's c_attn), gate | up (Phi-3's gate_up_proj). `shapes`: each param's output
    shape ((heads, Dh) for a projection to heads, (F,) for a feed-forward's). A weight is
    [sum of the outputs, D] (or [D, sum] when not `rows_out`: GPT-2's Conv1D), a bias [sum];
    zoo's params are [D, *shape] and [*shape]."""
    sizes = [math.prod(shape) for shape in shapes]

    def split(w):
        w = w.T if rows_out and w.ndim == 2 else w  # -> [D, sum] or [sum]
        parts = np.split(w, np.cumsum(sizes)[:-1], axis=-1)
        return tuple(p.reshape(*p.shape[:-1], *shape) for p, shape in zip(parts, shapes))

    def join(*parts):
        fused = np.concatenate([p.reshape(*p.shape[: p.ndim - len(s)], -1) for p, s in zip(parts, shapes)], axis=-1)
        return fused.T if rows_out and fused.ndim == 2 else fused

    return Rule(hf, zoo, split, join)


@dataclasses.dataclass(frozen=True)
class LayerRules:
    """The layers of one zoo tower (its attribute name in the model: "tower", or an
    encoder-decoder's "encoder" and "decoder"), its depth, and the rules of one layer given
    its LayerSpec (MoE or dense)."""

    tower: str
    num_layers: int
    rules: Callable[[LayerSpec], Sequence[Rule]]


@dataclasses.dataclass(frozen=True)
class Layout:
    top: tuple[Rule, ...]
    towers: tuple[LayerRules, ...]
    ignored: Callable[[str], bool] = lambda name: False  # tensors a checkpoint may hold that zoo does not use


def slots(config: ModelConfig, layout: Layout):
    """(hf name, [(zoo path, index)], rule) for every tensor; index selects inside a stacked param."""
    for rule in layout.top:
        yield rule.hf, [(path, ()) for path in rule.zoo], rule
    for tower in layout.towers:
        specs = layer_specs(config, tower.num_layers)
        locations = layer_locations(config, tower.num_layers)
        stacks = ("first_layers", "layers") if max(stack for stack, _, _ in locations) else ("layers",)
        for layer, (stack, block, index) in enumerate(locations):
            base = (tower.tower, stacks[stack]) + (() if block is None else ("blocks", block))
            for rule in tower.rules(specs[layer]):
                experts = range(config.moe.num_experts) if "{expert}" in rule.hf else [None]
                for expert in experts:
                    position = (index,) if expert is None else (index, expert)
                    name = rule.hf.format(layer=layer, expert=expert)
                    yield name, [(base + path, position) for path in rule.zoo], rule


def to_zoo(model: Model, layout: Layout, tensors: dict[str, Array]) -> tuple[nnx.State, list[str]]:
    """(zoo params from Hugging Face tensors, the names of the tensors left out because the
    layout has no use for them). Every param must be covered, and every other tensor used;
    each one used must hold finite floating-point values."""
    flat = {path: np.zeros(v.shape, v.dtype) for path, v in flatten(model.abstract_params).items()}
    used, expected_shapes = set(), {}
    for name, targets, rule in slots(model.config, layout):
        if name not in tensors:
            raise HFConfigError(f"the checkpoint has no tensor {name!r}")
        tensor = np.asarray(tensors[name])
        if not jax.numpy.issubdtype(tensor.dtype, jax.numpy.floating):
            raise HFConfigError(f"tensor {name!r} has dtype {tensor.dtype}; zoo reads floating-point weights")
        if not np.isfinite(tensor).all():
            raise HFConfigError(f"tensor {name!r} holds NaN or infinite values")
        shapes = tuple(flat[path][index].shape for path, index in targets)
        key = (rule.hf, shapes)  # the name template: once per kind of tensor, not per layer and expert
        if key not in expected_shapes:
            expected_shapes[key] = rule.to_hf(*(np.zeros(shape, np.float32) for shape in shapes)).shape
        expected = expected_shapes[key]
        if tensor.shape != expected:
            raise HFConfigError(f"tensor {name!r} has shape {list(tensor.shape)}; the config needs {list(expected)}")
        for (path, index), value in zip(targets, rule.to_zoo(tensor)):
            flat[path][index] = value.astype(flat[path].dtype)
        used.add(name)
    unused = sorted(n for n in set(tensors) - used if not layout.ignored(n))
    if unused:
        shown = ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else "")
        raise HFConfigError(f"the checkpoint has tensors the config has no place for: {shown}")
    return filled(model.abstract_params, flat), sorted(set(tensors) - used)


def filled(abstract: nnx.State, flat: dict[Path, Array]) -> nnx.State:
    """A State shaped like `abstract` holding the arrays of `flat` ({path: array}, as `flatten` gives)."""
    params = jax.tree.map(lambda a: a, abstract)  # a fresh State to fill
    nnx.replace_by_pure_dict(params, _nest(flat))
    return params


def to_hf(model: Model, layout: Layout, params: nnx.State) -> dict[str, Array]:
    flat = {path: np.asarray(v) for path, v in flatten(params).items()}
    return {
        name: np.ascontiguousarray(rule.to_hf(*(flat[path][index] for path, index in targets)))
        for name, targets, rule in slots(model.config, layout)
    }


def flatten(params: nnx.State) -> dict[Path, object]:
    out = {}

    def visit(node, path):
        if isinstance(node, dict):
            for key, child in node.items():
                visit(child, (*path, key))
        else:
            out[path] = node

    visit(nnx.to_pure_dict(params), ())
    return out


def _nest(flat: dict[Path, Array]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree
