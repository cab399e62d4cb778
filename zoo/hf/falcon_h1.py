"""Falcon-H1 (FalconH1ForCausalLM): in every layer attention and a Mamba-2 mixer side by side
on the same normed input, their outputs summed ("global+mamba2"), then a SwiGLU; muP's constant
multipliers on the embeddings, the attention's input, keys and output, the mixer's input, its
projection's five parts (mup_vector) and output, the SwiGLU's gate and down projection, and the
logits.

zoo folds every multiplier into the weight it scales on import, so the model computes the same
function with plain layers; an export writes those folded weights with multipliers of 1. (The
function is the same; training the folded weights from there is not muP's parametrisation.)
"""

from __future__ import annotations

import numpy as np

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.decoder_layout import attention_rules, gated_mlp_rules
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mamba2 import HYBRID_NAMES, mixer_fields, mixer_rules, mixer_sizes
from zoo.hf.mapping import HFConfigError, Layout, LayerRules, Rule, same, scaled, transposed

SCALARS = (
    "embedding_multiplier", "lm_head_multiplier", "attention_in_multiplier", "key_multiplier", "attention_out_multiplier",
    "ssm_in_multiplier", "ssm_out_multiplier",
)
LISTS = {"mlp_multipliers": 2, "ssm_multipliers": 5}  # gate, down; z, x, B, C, dt of the mixer's projection
# [model.mamba2] output_norm -> (mamba_rms_norm, mamba_norm_before_gate); without the norm the second says nothing
OUTPUT_NORMS = {"none": (False, True), "norm_first": (True, True), "gate_first": (True, False)}


def multipliers(hf: Fields) -> dict[str, float | tuple[float, ...]]:
    """Every muP multiplier of the config, each list of the length the model reads."""
    found: dict[str, float | tuple[float, ...]] = {name: hf.float(name, 1.0) for name in SCALARS}
    for name, length in LISTS.items():
        values = hf.floats(name, (1.0,) * length)
        if len(values) != length:
            raise HFConfigError(f"config.json: {name} needs {length} numbers, got {list(values)}")
        found[name] = tuple(values)
    return found


def read(hf: Fields) -> dict:
    hidden, heads, max_position = hf.int("hidden_size"), hf.int("num_attention_heads"), hf.int("max_position_embeddings")
    tied, scales = hf.bool("tie_word_embeddings", False), multipliers(hf)
    if tied and scales["embedding_multiplier"] != scales["lm_head_multiplier"]:
        raise HFConfigError(
            f"config.json: tied embeddings with embedding_multiplier={scales['embedding_multiplier']} and "
            f"lm_head_multiplier={scales['lm_head_multiplier']}; zoo folds the multipliers into the one shared table, "
            "so they must be equal"
        )
    expand = hf.int("mamba_expand", 2)
    inner = hf.int("mamba_d_ssm") if hf.value("mamba_d_ssm") is not None else expand * hidden
    sizes = mixer_sizes(hf, HYBRID_NAMES, inner)
    if hf.bool("projectors_bias", False) != sizes["bias"]:
        raise HFConfigError(
            f"config.json: mamba_proj_bias={sizes['bias']} but projectors_bias={not sizes['bias']}; zoo's Mamba-2 has biases on "
            "both its projections or on neither"
        )
    rms_norm, before_gate = hf.bool("mamba_rms_norm", False), hf.bool("mamba_norm_before_gate", True)
    sizes["output_norm"] = "none" if not rms_norm else "norm_first" if before_gate else "gate_first"
    bias = hf.bool("attention_bias", False)
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": hidden, "num_layers": hf.int("num_hidden_layers"),
        "num_heads": heads, "num_kv_heads": hf.int("num_key_value_heads"), "head_dim": hf.int("head_dim", hidden // heads),
        "ffn_dim": hf.int("intermediate_size"), "mlp_bias": hf.bool("mlp_bias", False), "norm": "rms",
        "norm_eps": hf.float("rms_norm_eps", 1e-5), "tie_embeddings": tied, "max_seq_len": max_position,
        "position": shared.rope(hf, max_position),
        "attention": {"layer_pattern": ["global+mamba2"], "qkv_bias": bias, "out_bias": bias},
        "mamba2": sizes, **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    attention, sizes = model.attention, model.mamba2
    if attention.layer_pattern != ("global+mamba2",):
        raise HFConfigError("every Falcon-H1 layer runs global attention and Mamba-2 side by side (layer_pattern ['global+mamba2'])")
    if attention.qkv_bias != attention.out_bias:
        raise HFConfigError("Falcon-H1's attention has biases on all of q, k, v and o or on none")
    rms_norm, before_gate = OUTPUT_NORMS[sizes.output_norm]
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads, "head_dim": model.head_dim,
        "intermediate_size": model.ffn_dim, "mlp_bias": model.mlp_bias, "attention_bias": attention.qkv_bias,
        "rms_norm_eps": model.norm_eps, "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len,
        "mamba_d_ssm": sizes.num_heads * sizes.head_dim, "projectors_bias": sizes.bias, "mamba_rms_norm": rms_norm,
        "mamba_norm_before_gate": before_gate, **mixer_fields(model, HYBRID_NAMES, tuple(OUTPUT_NORMS)),
        **{name: 1.0 for name in SCALARS}, **{name: [1.0] * length for name, length in LISTS.items()},
        **shared.rope_fields(model),
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    """The weights' places, each multiplier (from the checkpoint's config on import; 1 on export) folded into its own."""
    scales = multipliers(hf) if hf is not None else {name: 1.0 for name in SCALARS} | {n: (1.0,) * k for n, k in LISTS.items()}
    table = same("model.embed_tokens.weight", ("embedder", "embedding", "table"))
    top = [scaled(table, scales["embedding_multiplier"]), same("model.final_layernorm.weight", ("tower", "final_norm", "scale"))]
    if not config.tie_embeddings:
        top.append(scaled(transposed("lm_head.weight", ("head", "unembed", "weight")), scales["lm_head_multiplier"]))
    rules = _layer(config, scales)
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: rules),), ignored=lambda name: "rotary_emb" in name)


def _layer(config: ModelConfig, scales: dict) -> list[Rule]:
    p = "model.layers.{layer}."
    rules = [same(p + "input_layernorm.weight", ("attention_norm", "scale")), same(p + "pre_ff_layernorm.weight", ("ffn_norm", "scale"))]
    rules += gated_mlp_rules(config, p + "feed_forward.")
    rules += attention_rules(config, p + "self_attn.", at=("attention", "attention"))
    rules += mixer_rules(config, p + "mamba.", at=("attention", "recurrent"))
    factors = _factors(config, scales)
    return [scaled(rule, factors[rule.hf[len(p):]]) if rule.hf[len(p):] in factors else rule for rule in rules]


def _factors(config: ModelConfig, scales: dict) -> dict[str, float | np.ndarray]:
    """What each tensor of a layer (named after model.layers.N.) is multiplied by on import."""
    sizes = config.mamba2
    gate, down = scales["mlp_multipliers"]
    inner, bc = sizes.num_heads * sizes.head_dim, sizes.groups * sizes.state_dim
    sections = [inner, inner, bc, bc, sizes.num_heads]  # z | x | B | C | dt
    mup = np.repeat(np.asarray(scales["ssm_multipliers"], np.float32), sections)
    attention_in, key, attention_out = (scales[f"{n}_multiplier"] for n in ("attention_in", "key", "attention_out"))
    return {
        "feed_forward.gate_proj.weight": gate, "feed_forward.gate_proj.bias": gate,
        "feed_forward.down_proj.weight": down, "feed_forward.down_proj.bias": down,
        "self_attn.q_proj.weight": attention_in, "self_attn.v_proj.weight": attention_in,
        "self_attn.k_proj.weight": attention_in * key, "self_attn.k_proj.bias": key,
        "self_attn.o_proj.weight": attention_out, "self_attn.o_proj.bias": attention_out,
        "mamba.in_proj.weight": mup[:, None] * scales["ssm_in_multiplier"], "mamba.in_proj.bias": mup,
        "mamba.out_proj.weight": scales["ssm_out_multiplier"], "mamba.out_proj.bias": scales["ssm_out_multiplier"],
    }


DEFAULTS = {  # transformers' defaults
    "bos_token_id": 1, "eos_token_id": 2, "num_key_value_heads": 8, "max_position_embeddings": 8192, "mamba_d_ssm": 1024,
    "mamba_n_heads": 128, "mamba_d_head": "auto", "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4, "mamba_expand": 2,
    "mamba_chunk_size": 256, "mamba_conv_bias": True, "mamba_proj_bias": False, "hidden_act": "silu",
}
INERT = frozenset({"num_logits_to_keep"})
FAMILIES = (Family("falcon_h1", "FalconH1ForCausalLM", read, write, layout, INERT, DEFAULTS),)
