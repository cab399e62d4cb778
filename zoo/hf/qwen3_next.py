"""Qwen3-Next (Qwen3NextForCausalLM): Gated DeltaNet layers with gated attention every
full_attention_interval-th layer (layer_types), each followed by experts with Qwen2-MoE's gated
shared expert; 1 + w norms, QK-norm, RoPE over a quarter of each head. Its in_proj_qkvz holds,
per key head, [q, k, the v of its value heads, their z]; in_proj_ba [b, a]; conv1d the channels
q | k | v; q_proj, per head, [q, the output gate]."""

from __future__ import annotations

import numpy as np

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.decoder_layout import mlp_experts
from zoo.hf.llama import sparse_layers
from zoo.hf.mamba2 import conv_channels
from zoo.hf.mapping import HFConfigError, Layout, LayerRules, Path, Rule, heads_in, heads_out, same, shifted, transposed
from zoo.models.block import LayerSpec
from zoo.models.stack import period
from zoo.models.wiring import layer_specs

KINDS = {"linear_attention": "gated_deltanet", "full_attention": "global"}  # layer_types -> layer_pattern


def read(hf: Fields) -> dict:
    layers, max_position = hf.int("num_hidden_layers"), hf.int("max_position_embeddings")
    types = hf.strs("layer_types")
    if types is None:
        interval = hf.int("full_attention_interval", 4)
        types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]
    else:
        hf.value("full_attention_interval")  # transformers derives layer_types from it; they win
    if len(types) != layers or set(types) - set(KINDS):
        raise HFConfigError(f"config.json: layer_types must name {layers} layers, each one of {', '.join(KINDS)}; got {types}")
    hf.expect("attention_bias", False, "Qwen3-Next's projections have no biases")
    if shared.activation(hf.str("hidden_act", "silu")) != "silu":
        raise HFConfigError(f"config.json: hidden_act={hf.str('hidden_act')!r}; Qwen3-Next's mixers and experts use silu")
    shared_dim = hf.int("shared_expert_intermediate_size")
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": hf.int("hidden_size"), "num_layers": layers,
        "num_heads": hf.int("num_attention_heads"), "num_kv_heads": hf.int("num_key_value_heads"),
        "head_dim": hf.int("head_dim"), "ffn_dim": hf.int("intermediate_size"), "norm_eps": hf.float("rms_norm_eps", 1e-6),
        "tie_embeddings": hf.bool("tie_word_embeddings", False), "max_seq_len": max_position,
        "position": shared.rope(hf, max_position, partial=True),
        "attention": {"layer_pattern": list(period([KINDS[t] for t in types])), "qk_norm": True, "output_gate": True},
        "gated_deltanet": {
            "num_heads": hf.int("linear_num_value_heads"), "num_key_heads": hf.int("linear_num_key_heads"),
            "key_dim": hf.int("linear_key_head_dim"), "value_dim": hf.int("linear_value_head_dim"),
            "conv_width": hf.int("linear_conv_kernel_dim"),
        },
        "moe": {
            "num_experts": hf.int("num_experts"), "top_k": hf.int("num_experts_per_tok"),
            "expert_ffn_dim": hf.int("moe_intermediate_size"), "router": "softmax", "renormalize": hf.bool("norm_topk_prob"),
            "shared_ffn_dim": shared_dim, "shared_gate": shared_dim > 0, **sparse_layers(hf, layers),
            "load_balance_coef": hf.float("router_aux_loss_coef", 0.001), "z_loss_coef": 0.0,
        },
        **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    attention, mixer, moe = model.attention, model.gated_deltanet, model.moe
    if mixer is None or moe is None or set(attention.layer_pattern) != {"gated_deltanet", "global"}:
        raise HFConfigError("Qwen3-Next mixes Gated DeltaNet and global attention layers, with experts")
    if not (attention.output_gate and attention.qk_norm) or attention.qkv_bias or attention.out_bias:
        raise HFConfigError("Qwen3-Next's attention has an output gate and QK-norm, and no biases")
    types = {kind: name for name, kind in KINDS.items()}
    pattern = attention.layer_pattern
    dense = [i for i, spec in enumerate(layer_specs(model, model.num_layers)) if not spec.moe]
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads, "head_dim": model.head_dim,
        "intermediate_size": model.ffn_dim, "hidden_act": "silu", "rms_norm_eps": model.norm_eps,
        "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len, "attention_bias": False,
        "layer_types": [types[pattern[i % len(pattern)]] for i in range(model.num_layers)],
        "linear_num_value_heads": mixer.num_heads, "linear_num_key_heads": mixer.num_key_heads,
        "linear_key_head_dim": mixer.key_dim, "linear_value_head_dim": mixer.value_dim, "linear_conv_kernel_dim": mixer.conv_width,
        "num_experts": moe.num_experts, "num_experts_per_tok": moe.top_k, "moe_intermediate_size": moe.expert_ffn_dim,
        "norm_topk_prob": moe.renormalize, "shared_expert_intermediate_size": moe.shared_ffn_dim,
        "router_aux_loss_coef": moe.load_balance_coef, "decoder_sparse_step": 1, "mlp_only_layers": dense,
        **shared.rope_fields(model, partial=True),
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    top = [
        same("model.embed_tokens.weight", ("embedder", "embedding", "table")),
        shifted("model.norm.weight", ("tower", "final_norm", "scale"), 1.0),
    ]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: _layer(config, spec)),), ignored=lambda name: "rotary_emb" in name)


def _layer(config: ModelConfig, spec: LayerSpec) -> list[Rule]:
    p = "model.layers.{layer}."
    rules = [
        shifted(p + "input_layernorm.weight", ("attention_norm", "scale"), 1.0),
        shifted(p + "post_attention_layernorm.weight", ("ffn_norm", "scale"), 1.0),
    ]
    if spec.moe:
        rules += mlp_experts(p, config.moe.shared_ffn_dim > 0)
    else:
        rules += [transposed(p + f"mlp.{n}_proj.weight", ("ffn", n, "weight")) for n in ("gate", "up", "down")]
    return rules + (_linear_attention(config, p + "linear_attn.") if spec.mixer == "gated_deltanet" else _gated_attention(config, p + "self_attn."))


def _gated_attention(config: ModelConfig, p: str) -> list[Rule]:
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    return [
        per_head(
            p + "q_proj.weight", (("attention", "q", "weight"), ("attention", "gate", "weight")), heads, (head_dim, head_dim),
            ((heads, head_dim), (heads, head_dim)),
        ),
        heads_in(p + "k_proj.weight", ("attention", "k", "weight"), kv_heads, head_dim),
        heads_in(p + "v_proj.weight", ("attention", "v", "weight"), kv_heads, head_dim),
        heads_out(p + "o_proj.weight", ("attention", "o", "weight"), heads, head_dim),
        shifted(p + "q_norm.weight", ("attention", "q_norm", "scale"), 1.0),
        shifted(p + "k_norm.weight", ("attention", "k_norm", "scale"), 1.0),
    ]


def _linear_attention(config: ModelConfig, p: str) -> list[Rule]:
    sizes = config.gated_deltanet
    key_heads, per_key = sizes.num_key_heads, sizes.num_heads // sizes.num_key_heads
    keys, values = sizes.key_dim, per_key * sizes.value_dim  # per key head
    mixer = lambda *path: ("attention", *path)
    key_shape, value_shape = (key_heads, keys), (sizes.num_heads, sizes.value_dim)
    return [
        per_head(
            p + "in_proj_qkvz.weight", tuple(mixer(n, "weight") for n in "qkvz"), key_heads, (keys, keys, values, values),
            (key_shape, key_shape, value_shape, value_shape),
        ),
        per_head(
            p + "in_proj_ba.weight", (mixer("b", "weight"), mixer("a", "weight")), key_heads, (per_key, per_key),
            ((sizes.num_heads,), (sizes.num_heads,)),
        ),
        conv_channels(p + "conv1d.weight", tuple(mixer(f"conv_{n}", "weight") for n in "qkv"), (key_heads * keys, key_heads * keys, sizes.num_heads * sizes.value_dim)),
        same(p + "dt_bias", mixer("dt_bias")),
        same(p + "A_log", mixer("A_log")),
        same(p + "norm.weight", mixer("norm", "scale")),
        heads_out(p + "out_proj.weight", mixer("out_proj", "weight"), sizes.num_heads, sizes.value_dim),
    ]


def per_head(hf: str, zoo: tuple[Path, ...], heads: int, widths: tuple[int, ...], shapes: tuple[tuple[int, ...], ...]) -> Rule:
    """A projection [heads x (w_1 + w_2 + ...), D] laid out head by head, each head's rows the
    params' parts one after another <-> zoo's params [D, *shape_i] (heads x w_i values each,
    e.g. [D, H, Dh], or [D, H] for one value per head)."""

    def split(w):
        blocks = w.T.reshape(w.shape[1], heads, sum(widths))
        parts = np.split(blocks, np.cumsum(widths)[:-1], axis=-1)
        return tuple(part.reshape(part.shape[0], *shape) for part, shape in zip(parts, shapes))

    def join(*parts):
        blocks = np.concatenate([part.reshape(part.shape[0], heads, width) for part, width in zip(parts, widths)], axis=-1)
        return blocks.reshape(blocks.shape[0], -1).T

    return Rule(hf, zoo, split, join)


DEFAULTS = {  # transformers' defaults
    "max_position_embeddings": 32768, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "decoder_sparse_step": 1, "norm_topk_prob": True, "router_aux_loss_coef": 0.001, "linear_conv_kernel_dim": 4,
}
INERT = frozenset({"output_router_logits"})  # training only
FAMILIES = (Family("qwen3_next", "Qwen3NextForCausalLM", read, write, layout, INERT, DEFAULTS),)
