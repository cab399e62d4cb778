"""Hugging Face tensors <-> zoo params for the families in configs.FAMILIES.

Each rule pairs a Hugging Face tensor name (per layer, or per layer and expert) with a
zoo param path and the reshapes between them: Hugging Face stores linear weights as
[out, in], zoo as [in, *out] with heads split out. Layers go to their place in zoo's
stacked segments by tower.layer_locations.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
from flax import nnx

from zoo.config import ModelConfig
from zoo.hf.configs import FAMILIES, export_family
from zoo.models import Model
from zoo.models.tower import layer_locations

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Rule:
    """hf: the tensor name ({layer}, {expert}); zoo: the param path inside the layer's block
    (or the model); to_zoo / to_hf: the reshapes between the two layouts."""

    hf: str
    zoo: tuple[str, ...]
    to_zoo: Callable[[Array], Array] = lambda w: w
    to_hf: Callable[[Array], Array] = lambda w: w


def transposed(hf: str, zoo: tuple[str, ...]) -> Rule:
    return Rule(hf, zoo, np.transpose, np.transpose)


def projection(hf: str, zoo: tuple[str, ...], heads: int, head_dim: int, d_model: int, out: bool = False) -> Rule:
    """q/k/v [heads * Dh, D] <-> [D, heads, Dh]; o (out) [D, heads * Dh] <-> [heads, Dh, D]."""
    if out:
        return Rule(hf, zoo, lambda w: w.T.reshape(heads, head_dim, d_model), lambda w: w.reshape(heads * head_dim, d_model).T)
    return Rule(hf, zoo, lambda w: w.T.reshape(d_model, heads, head_dim), lambda w: w.reshape(d_model, heads * head_dim).T)


def head_bias(hf: str, zoo: tuple[str, ...], heads: int, head_dim: int) -> Rule:
    return Rule(hf, zoo, lambda b: b.reshape(heads, head_dim), lambda b: b.reshape(-1))


def norm(hf: str, zoo: tuple[str, ...], offset: float) -> Rule:
    return Rule(hf, zoo, lambda w: w + offset, lambda w: w - offset)


def model_rules(config: ModelConfig, family: str) -> list[Rule]:
    offset = FAMILIES[family].norm_offset
    rules = [Rule("model.embed_tokens.weight", ("embedding", "table")), norm("model.norm.weight", ("final_norm", "scale"), offset)]
    if not config.tie_embeddings:
        rules.append(transposed("lm_head.weight", ("unembed", "weight")))
    return rules


def layer_rules(config: ModelConfig, family: str) -> list[Rule]:
    """The rules of one decoder layer; names hold {layer}."""
    heads, kv_heads, head_dim, d = config.num_heads, config.num_kv_heads, config.head_dim, config.d_model
    offset = FAMILIES[family].norm_offset
    attn, prefix = ("attention",), "model.layers.{layer}."
    rules = [
        projection(prefix + "self_attn.q_proj.weight", (*attn, "q", "weight"), heads, head_dim, d),
        projection(prefix + "self_attn.k_proj.weight", (*attn, "k", "weight"), kv_heads, head_dim, d),
        projection(prefix + "self_attn.v_proj.weight", (*attn, "v", "weight"), kv_heads, head_dim, d),
        projection(prefix + "self_attn.o_proj.weight", (*attn, "o", "weight"), heads, head_dim, d, out=True),
        norm(prefix + "input_layernorm.weight", ("attention_norm", "scale"), offset),
    ]
    if config.attention.qkv_bias:
        for name, count in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
            rules.append(head_bias(prefix + f"self_attn.{name}_proj.bias", (*attn, name, "bias"), count, head_dim))
    if config.attention.out_bias:
        rules.append(Rule(prefix + "self_attn.o_proj.bias", (*attn, "o", "bias")))
    if config.attention.qk_norm:
        rules += [norm(prefix + f"self_attn.{n}_norm.weight", (*attn, f"{n}_norm", "scale"), offset) for n in ("q", "k")]
    if config.block == "sandwich":
        rules += [
            norm(prefix + "post_attention_layernorm.weight", ("attention_post_norm", "scale"), offset),
            norm(prefix + "pre_feedforward_layernorm.weight", ("ffn_norm", "scale"), offset),
            norm(prefix + "post_feedforward_layernorm.weight", ("ffn_post_norm", "scale"), offset),
        ]
    else:
        rules.append(norm(prefix + "post_attention_layernorm.weight", ("ffn_norm", "scale"), offset))
    if config.moe is not None:
        moe = prefix + "block_sparse_moe."
        rules.append(transposed(moe + "gate.weight", ("ffn", "router", "weight")))
        rules += [  # per expert; {expert} indexes the experts axis
            transposed(moe + "experts.{expert}.w1.weight", ("ffn", "experts", "gate")),
            transposed(moe + "experts.{expert}.w3.weight", ("ffn", "experts", "up")),
            transposed(moe + "experts.{expert}.w2.weight", ("ffn", "experts", "down")),
        ]
    else:
        for name in ("gate", "up", "down"):
            rules.append(transposed(prefix + f"mlp.{name}_proj.weight", ("ffn", name, "weight")))
            if config.mlp_bias:
                rules.append(Rule(prefix + f"mlp.{name}_proj.bias", ("ffn", name, "bias")))
    return rules


def _slots(model: Model):
    """(hf name, zoo path, index into the stacked param or None, rule) for every tensor."""
    config = model.config
    family = export_family(config)
    segments = ["first_layers", "layers"] if len({s for s, _, _ in layer_locations(config, config.num_layers)}) == 2 else ["layers"]
    for rule in model_rules(config, family):
        yield rule.hf, rule.zoo, (), rule
    for layer, (segment, block, index) in enumerate(layer_locations(config, config.num_layers)):
        base = (segments[segment],) if block is None else (segments[segment], "blocks", block)
        for rule in layer_rules(config, family):
            if "{expert}" in rule.hf:
                for expert in range(config.moe.num_experts):
                    yield rule.hf.format(layer=layer, expert=expert), base + rule.zoo, (index, expert), rule
            else:
                yield rule.hf.format(layer=layer), base + rule.zoo, (index,), rule


def to_zoo(model: Model, tensors: dict[str, Array]) -> nnx.State:
    """zoo params from Hugging Face tensors (name -> array); every param must be covered and
    every tensor used (rotary caches aside)."""
    flat = {path: np.zeros(v.shape, v.dtype) for path, v in _flat(model.abstract_params).items()}
    used = set()
    for name, path, index, rule in _slots(model):
        if name not in tensors:
            raise KeyError(f"the checkpoint has no tensor {name!r}")
        flat[path][index] = rule.to_zoo(np.asarray(tensors[name])).astype(flat[path].dtype)
        used.add(name)
    if model.config.tie_embeddings:  # transformers' state dicts repeat the tied table
        used.add("lm_head.weight")
    unused = sorted(n for n in set(tensors) - used if "rotary_emb" not in n)
    if unused:
        raise KeyError(f"the checkpoint has tensors the config has no place for: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    params = jax.tree.map(lambda a: a, model.abstract_params)  # a fresh State to fill
    nnx.replace_by_pure_dict(params, _nest(flat))
    return params


def to_hf(model: Model, params: nnx.State) -> dict[str, Array]:
    """Hugging Face tensors (name -> array) from zoo params."""
    flat = {path: np.asarray(v) for path, v in _flat(params).items()}
    return {name: np.ascontiguousarray(rule.to_hf(flat[path][index])) for name, path, index, rule in _slots(model)}


def _flat(params: nnx.State) -> dict[tuple, object]:
    """Param path (strings and ints) -> value, for nnx.Param leaves only."""
    pure = nnx.to_pure_dict(nnx.filter_state(params, nnx.Param))
    out = {}

    def visit(node, path):
        if isinstance(node, dict):
            for key, child in node.items():
                visit(child, (*path, key))
        else:
            out[path] = node

    visit(pure, ())
    return out


def _nest(flat: dict[tuple, Array]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree

