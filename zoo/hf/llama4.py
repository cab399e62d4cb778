"""Llama 4's text model (llama4_text, Llama4ForCausalLM).

Llama-shaped attention whose layers differ by two per-layer lists: no_rope_layers (1: the
layer rotates q and k, 0: a NoPE layer, every 4th by default) and layer_types (chunked
attention of attention_chunk_size positions, by default on the RoPE layers). RoPE layers
L2-normalise q and k after rotating them (use_qk_norm); NoPE layers scale their queries by
the temperature tuning's factor. Feed-forwards are MoE on every interleave_moe_layer_step-th
layer: a top-1 sigmoid router whose weight scales the expert's input, and a shared expert,
the experts' weights stored fused (gate_up_proj [E, D, 2F], down_proj [E, F, D]).

Its checkpoints keep each head's RoPE pairs interleaved (x0 y0 x1 y1 ...); zoo rotates
halves, so the q and k rows of every layer are reordered on the way in and back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import (
    HFConfigError, Layout, LayerRules, Rule, head_bias, heads_in, heads_out, rope_halves, same, transposed,
)
from zoo.models.block import LayerSpec
from zoo.models.stack import period
from zoo.models.wiring import layer_specs

KINDS = {"chunked_attention": "chunked", "full_attention": "global"}


def _per_layer_ints(hf: Fields, name: str) -> list[int] | None:
    """A per-layer list of integers (None when absent)."""
    value = hf.value(name)
    if value is not None and not (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise HFConfigError(f"config.json: {name} must be a list of integers, not {value!r}")
    return value


def _layers(hf: Fields, num_layers: int) -> dict:
    """layer_pattern, layer_rope and chunk_size from no_rope_layers and layer_types."""
    interval = hf.int("no_rope_layer_interval")
    ropes = _per_layer_ints(hf, "no_rope_layers") or [int((i + 1) % interval != 0) for i in range(num_layers)]
    chunk = hf.int("attention_chunk_size", None)
    types = hf.strs("layer_types") or [
        "chunked_attention" if rope and chunk is not None else "full_attention" for rope in ropes
    ]
    if len(ropes) < num_layers or not set(ropes[:num_layers]) <= {0, 1}:
        raise HFConfigError(f"config.json: no_rope_layers must give 0 or 1 for each of the {num_layers} layers, not {ropes}")
    if len(types) != num_layers or not set(types) <= set(KINDS):
        raise HFConfigError(
            f"config.json: layer_types must be chunked_attention or full_attention for each of the {num_layers} layers, not {types}"
        )
    if "chunked_attention" in types and chunk is None:
        raise HFConfigError("config.json: chunked_attention layers need an attention_chunk_size")
    unit = period([(KINDS[kind], bool(rope)) for kind, rope in zip(types, ropes)])
    pattern, rope_flags = [kind for kind, _ in unit], [rope for _, rope in unit]
    return {
        "layer_pattern": pattern, "layer_rope": [] if all(rope_flags) else rope_flags,
        "chunk_size": chunk if "chunked" in pattern else None,
    }


def _read(hf: Fields) -> dict:
    heads, layers = hf.int("num_attention_heads"), hf.int("num_hidden_layers")
    max_position = hf.int("max_position_embeddings")
    attention: dict[str, Any] = _layers(hf, layers) | {"qk_l2_norm": hf.bool("use_qk_norm")}
    if hf.bool("attention_bias"):
        attention |= {"qkv_bias": True, "out_bias": True}
    tuning, floor, scale = hf.bool("attn_temperature_tuning"), hf.int("floor_scale"), hf.float("attn_scale")
    if tuning and attention["layer_rope"]:  # it acts on NoPE layers alone
        attention |= {"temperature_tuning": True, "temperature_floor": floor, "temperature_scale": scale}
    step = hf.int("interleave_moe_layer_step")
    if step < 1:
        raise HFConfigError(f"config.json: interleave_moe_layer_step must be a positive integer, not {step}")
    moe_layers = _per_layer_ints(hf, "moe_layers") or list(range(step - 1, layers, step))
    experts = hf.int("intermediate_size")
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": hf.int("hidden_size"), "num_layers": layers, "num_heads": heads,
        "num_kv_heads": hf.int("num_key_value_heads", heads), "head_dim": hf.int("head_dim", None),
        "ffn_dim": hf.int("intermediate_size_mlp"), "ffn_activation": shared.activation(hf.str("hidden_act")),
        "norm_eps": hf.float("rms_norm_eps"), "tie_embeddings": hf.bool("tie_word_embeddings"), "max_seq_len": max_position,
        "position": shared.rope(hf, max_position), "attention": attention, **shared.dtypes(hf),
        "moe": {
            "num_experts": hf.int("num_local_experts"), "top_k": hf.int("num_experts_per_tok"), "expert_ffn_dim": experts,
            "router": "top_sigmoid", "renormalize": False, "weights_on_inputs": True, "shared_ffn_dim": experts,
            **shared.moe_layers(moe_layers, layers, "moe_layers"), "load_balance_coef": hf.float("router_aux_loss_coef"), "z_loss_coef": 0.0,
        },
    }


def _write(model: ModelConfig) -> dict:
    attention, moe = model.attention, model.moe
    if moe is None:
        raise HFConfigError("llama4_text has experts")
    pattern = [attention.layer_pattern[i % len(attention.layer_pattern)] for i in range(model.num_layers)]
    ropes = attention.layer_ropes()
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads, "head_dim": model.head_dim,
        "intermediate_size": moe.expert_ffn_dim, "intermediate_size_mlp": model.ffn_dim,
        "hidden_act": shared.HF_ACTIVATION[model.ffn_activation], "rms_norm_eps": model.norm_eps,
        "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len, **shared.rope_fields(model),
        "attention_bias": attention.qkv_bias, "use_qk_norm": attention.qk_l2_norm,
        "no_rope_layers": [int(ropes[i % len(ropes)]) for i in range(model.num_layers)],
        "layer_types": ["chunked_attention" if kind == "chunked" else "full_attention" for kind in pattern],
        "attention_chunk_size": attention.chunk_size, "attn_temperature_tuning": attention.temperature_tuning,
        "floor_scale": attention.temperature_floor, "attn_scale": attention.temperature_scale,
        "num_local_experts": moe.num_experts, "num_experts_per_tok": moe.top_k, "interleave_moe_layer_step": moe.every,
        "moe_layers": [i for i, spec in enumerate(layer_specs(model, model.num_layers)) if spec.moe],
    }


def _halved(rule: Rule, head_dim: int) -> Rule:
    """`rule` with each head's last axis reordered from interleaved RoPE pairs to halves."""
    order = rope_halves(head_dim)
    back = np.argsort(order)
    return Rule(rule.hf, rule.zoo, lambda w: tuple(a[..., order] for a in rule.to_zoo(w)), lambda a: rule.to_hf(a[..., back]))


def _gate_up(hf: str, zoo: tuple) -> Rule:
    """The experts' fused gate_up_proj [E, D, 2F] (gate first) <-> zoo's gate and up [E, D, F]."""
    return Rule(hf, zoo, lambda w: tuple(np.split(w, 2, axis=-1)), lambda gate, up: np.concatenate([gate, up], axis=-1))


def _layer(config: ModelConfig, spec: LayerSpec) -> list[Rule]:
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    p, attn = "model.layers.{layer}.", ("attention",)
    rules = [
        _halved(heads_in(p + "self_attn.q_proj.weight", (*attn, "q", "weight"), heads, head_dim), head_dim),
        _halved(heads_in(p + "self_attn.k_proj.weight", (*attn, "k", "weight"), kv_heads, head_dim), head_dim),
        heads_in(p + "self_attn.v_proj.weight", (*attn, "v", "weight"), kv_heads, head_dim),
        heads_out(p + "self_attn.o_proj.weight", (*attn, "o", "weight"), heads, head_dim),
        same(p + "input_layernorm.weight", ("attention_norm", "scale")),
        same(p + "post_attention_layernorm.weight", ("ffn_norm", "scale")),
    ]
    if config.attention.qkv_bias:
        rules += [
            _halved(head_bias(p + "self_attn.q_proj.bias", (*attn, "q", "bias"), heads, head_dim), head_dim),
            _halved(head_bias(p + "self_attn.k_proj.bias", (*attn, "k", "bias"), kv_heads, head_dim), head_dim),
            head_bias(p + "self_attn.v_proj.bias", (*attn, "v", "bias"), kv_heads, head_dim),
            same(p + "self_attn.o_proj.bias", (*attn, "o", "bias")),
        ]
    ffn = p + "feed_forward."
    if not spec.moe:
        return rules + [transposed(ffn + f"{n}_proj.weight", ("ffn", n, "weight")) for n in ("gate", "up", "down")]
    return rules + [
        transposed(ffn + "router.weight", ("ffn", "router", "weight")),
        _gate_up(ffn + "experts.gate_up_proj", (("ffn", "experts", "gate"), ("ffn", "experts", "up"))),
        same(ffn + "experts.down_proj", ("ffn", "experts", "down")),
        *(transposed(ffn + f"shared_expert.{n}_proj.weight", ("ffn", "shared", n, "weight")) for n in ("gate", "up", "down")),
    ]


def _layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    top = [same("model.embed_tokens.weight", ("embedder", "embedding", "table")), same("model.norm.weight", ("tower", "final_norm", "scale"))]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    tower = LayerRules("tower", config.num_layers, lambda spec: _layer(config, spec))
    return Layout(tuple(top), (tower,), ignored=lambda name: "rotary_emb" in name)


DEFAULTS = {  # transformers' Llama4TextConfig values for fields a config may lack
    "vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
    "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False, "num_experts_per_tok": 1, "num_local_experts": 16, "interleave_moe_layer_step": 1,
    "use_qk_norm": True, "router_aux_loss_coef": 0.001, "rope_theta": 500000.0, "no_rope_layer_interval": 4,
    "attention_chunk_size": 8192, "attn_temperature_tuning": True, "floor_scale": 8192, "attn_scale": 0.1,
    "attention_bias": False,
}
INERT = frozenset({"router_jitter_noise", "output_router_logits"})  # transformers' Llama 4 forward reads neither
FAMILIES = (Family("llama4_text", "Llama4ForCausalLM", _read, _write, _layout, INERT, DEFAULTS),)
