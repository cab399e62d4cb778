"""Bamba (BambaForCausalLM; IBM's Mamba-2 hybrid, the layout of Granite 4's dense models): Mamba-2
layers with attention at attn_layer_indices, every layer with a SwiGLU feed-forward, RoPE over
part of each attention head."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.decoder_layout import attention_rules, gated_mlp_rules
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mamba2 import HYBRID_NAMES, mixer_fields, mixer_rules, mixer_sizes
from zoo.hf.mapping import HFConfigError, Layout, LayerRules, Rule, same, transposed
from zoo.models.block import LayerSpec
from zoo.models.stack import period


def read(hf: Fields) -> dict:
    hidden, num_layers, max_position = hf.int("hidden_size"), hf.int("num_hidden_layers"), hf.int("max_position_embeddings")
    attention_layers = set(hf.ids("attn_layer_indices"))
    if not attention_layers <= set(range(num_layers)):
        raise HFConfigError(f"config.json: attn_layer_indices {sorted(attention_layers)} name layers past the {num_layers} it has")
    pattern = ["global" if i in attention_layers else "mamba2" for i in range(num_layers)]
    bias = hf.bool("attention_bias", False)
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": hidden, "num_layers": num_layers,
        "num_heads": hf.int("num_attention_heads"), "num_kv_heads": hf.int("num_key_value_heads"),
        "ffn_dim": hf.int("intermediate_size"), "mlp_bias": hf.bool("mlp_bias", False), "norm": "rms",
        "norm_eps": hf.float("rms_norm_eps", 1e-5), "tie_embeddings": hf.bool("tie_word_embeddings", False),
        "max_seq_len": max_position, "position": shared.rope(hf, max_position, partial=True),
        "attention": {"layer_pattern": list(period(pattern)), "qkv_bias": bias, "out_bias": bias},
        "mamba2": mixer_sizes(hf, HYBRID_NAMES, hf.int("mamba_expand") * hidden), **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    mixers = model.attention.layer_mixers()
    if model.mamba2 is None or set(mixers) != {"attention", "mamba2"}:
        raise HFConfigError("Bamba mixes Mamba-2 and attention layers")
    if set(model.attention.layer_pattern) - {"mamba2", "global"} or model.attention.qkv_bias != model.attention.out_bias:
        raise HFConfigError("Bamba's attention layers are global, with biases on all of q, k, v and o or on none")
    if model.head_dim * model.num_heads != model.d_model:
        raise HFConfigError(f"Bamba's attention heads are d_model / num_heads wide, not head_dim={model.head_dim}")
    width = model.mamba2.num_heads * model.mamba2.head_dim
    if width % model.d_model:
        raise HFConfigError(f"Mamba-2's width {width} is not a whole multiple (mamba_expand) of d_model={model.d_model}")
    attention_layers = [i for i in range(model.num_layers) if mixers[i % len(mixers)] == "attention"]
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads,
        "intermediate_size": model.ffn_dim, "mlp_bias": model.mlp_bias, "attention_bias": model.attention.qkv_bias,
        "rms_norm_eps": model.norm_eps, "tie_word_embeddings": model.tie_embeddings,
        "max_position_embeddings": model.max_seq_len, "attn_layer_indices": attention_layers,
        "mamba_expand": width // model.d_model, **mixer_fields(model, HYBRID_NAMES), **shared.rope_fields(model, partial=True),
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    top = [
        same("model.embed_tokens.weight", ("embedder", "embedding", "table")),
        same("model.final_layernorm.weight", ("tower", "final_norm", "scale")),
    ]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: _layer(config, spec)),), ignored=lambda name: "rotary_emb" in name)


def _layer(config: ModelConfig, spec: LayerSpec) -> list[Rule]:
    p = "model.layers.{layer}."
    rules = [same(p + "input_layernorm.weight", ("attention_norm", "scale")), same(p + "pre_ff_layernorm.weight", ("ffn_norm", "scale"))]
    rules += gated_mlp_rules(config, p + "feed_forward.")
    if spec.mixer == "mamba2":
        return rules + mixer_rules(config, p + "mamba.")
    return rules + attention_rules(config, p + "self_attn.")


DEFAULTS = {  # transformers' defaults
    "bos_token_id": 1, "eos_token_id": 2, "num_key_value_heads": 8, "max_position_embeddings": 262144, "attn_layer_indices": None,
    "mamba_n_heads": 128,
    "mamba_d_head": "auto", "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4, "mamba_expand": 2,
    "mamba_chunk_size": 256, "mamba_conv_bias": True, "mamba_proj_bias": False, "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
}
INERT = frozenset({"num_logits_to_keep", "z_loss_coefficient"})
FAMILIES = (Family("bamba", "BambaForCausalLM", read, write, layout, INERT, DEFAULTS),)
