"""Hugging Face `config.json` <-> zoo's ModelConfig, read field by field.

A family is a row of FAMILIES: its architecture name and what it fixes beyond the shared
fields (Qwen2's q/k/v biases, Qwen3's QK-norm, Gemma 2's sandwich norms and soft-caps).
Everything else (sizes, RoPE scaling, sliding windows, bias flags, experts) comes from
the fields every family names the same way, so a family that combines variants zoo
already has is one more row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from zoo.config import ConfigError, ModelConfig


class HFConfigError(ValueError):
    """A Hugging Face config zoo cannot represent."""


@dataclasses.dataclass(frozen=True)
class Family:
    architecture: str
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)  # zoo model settings the family implies
    norm_offset: float = 0.0  # stored norm weights are scale - offset (Gemma's 1 + w)


FAMILIES: dict[str, Family] = {
    "llama": Family("LlamaForCausalLM"),
    "mistral": Family("MistralForCausalLM"),
    "mixtral": Family("MixtralForCausalLM"),
    "qwen2": Family("Qwen2ForCausalLM", {"attention": {"qkv_bias": True}}),
    "qwen3": Family("Qwen3ForCausalLM", {"attention": {"qk_norm": True}}),
    "gemma2": Family(
        "Gemma2ForCausalLM", {"block": "sandwich", "embedding_scale": True, "tie_embeddings": True}, norm_offset=1.0
    ),
}

ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"}
ROPE_TYPES = {"default": "none", "linear": "linear", "dynamic": "dynamic_ntk", "yarn": "yarn", "llama3": "llama3"}
ROPE_FIELDS = {  # HF rope parameter -> zoo position field
    "factor": "scaling_factor",
    "original_max_position_embeddings": "original_max_position",
    "low_freq_factor": "low_freq_factor",
    "high_freq_factor": "high_freq_factor",
    "beta_fast": "beta_fast",
    "beta_slow": "beta_slow",
    "attention_factor": "attention_factor",
}
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def family_of(hf: dict) -> Family:
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise HFConfigError(f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def to_zoo(hf: dict) -> ModelConfig:
    """The ModelConfig of a Hugging Face config (the parsed config.json)."""
    family = family_of(hf)
    model_type = hf["model_type"]
    activation = hf.get("hidden_activation") or hf.get("hidden_act", "silu")
    if activation not in ACTIVATIONS:
        raise HFConfigError(f"hidden activation {activation!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    model: dict[str, Any] = {
        "vocab_size": hf["vocab_size"],
        "d_model": hf["hidden_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "num_kv_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
        "ffn_dim": hf["intermediate_size"],
        "ffn_activation": ACTIVATIONS[activation],
        "norm_eps": hf.get("rms_norm_eps", 1e-6),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "max_seq_len": hf.get("max_position_embeddings", 2048),
        "mlp_bias": bool(hf.get("mlp_bias", False)),
    }
    if hf.get("head_dim"):
        model["head_dim"] = hf["head_dim"]
    dtype = DTYPES.get(str(hf.get("dtype") or hf.get("torch_dtype") or "float32"), "float32")
    model["dtype"] = model["param_dtype"] = dtype
    attention: dict[str, Any] = {}
    if hf.get("attention_bias"):
        attention |= {"qkv_bias": True, "out_bias": True}
    model["position"] = _rope(hf)
    window = hf.get("sliding_window")
    if model_type == "qwen2" and not hf.get("use_sliding_window", False):
        window = None
    if window:
        layer_types = hf.get("layer_types")
        if layer_types and len(set(layer_types)) > 1:
            pattern = ["local" if kind == "sliding_attention" else "global" for kind in layer_types]
            attention |= {"layer_pattern": _period(pattern), "window": window}
        elif not layer_types or layer_types[0] == "sliding_attention":
            attention |= {"layer_pattern": ["local"], "window": window}
    if model_type == "gemma2":
        head_dim = model.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        if hf.get("query_pre_attn_scalar", head_dim) != head_dim:
            raise HFConfigError(f"query_pre_attn_scalar={hf['query_pre_attn_scalar']} differs from head_dim={head_dim}; zoo scales by head_dim")
        attention["logit_softcap"] = hf.get("attn_logit_softcapping")
        model["final_logit_softcap"] = hf.get("final_logit_softcapping")
    if hf.get("num_local_experts"):
        model["moe"] = {
            "num_experts": hf["num_local_experts"],
            "top_k": hf["num_experts_per_tok"],
            "expert_ffn_dim": hf["intermediate_size"],
            "router": "softmax",
            "renormalize": True,
            "load_balance_coef": hf.get("router_aux_loss_coef", 0.01),
        }
    fixed = dict(family.fixed)
    attention |= fixed.pop("attention", {})
    model["attention"] = {k: v for k, v in attention.items() if v is not None}
    model |= {k: v for k, v in fixed.items()}
    model = {k: v for k, v in model.items() if v is not None}
    try:
        return ModelConfig.from_dict(model)
    except ConfigError as error:
        raise HFConfigError(f"the Hugging Face config maps to an invalid zoo config: {error}") from None


def _rope(hf: dict) -> dict:
    """[model.position] from rope_parameters (transformers 5) or rope_theta + rope_scaling."""
    parameters = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = parameters.pop("rope_theta", hf.get("rope_theta", 10_000.0))
    rope_type = parameters.pop("rope_type", parameters.pop("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise HFConfigError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    position = {"kind": "rope", "rope_theta": float(theta), "rope_scaling": ROPE_TYPES[rope_type]}
    if rope_type != "default":
        position |= {ROPE_FIELDS[k]: v for k, v in parameters.items() if k in ROPE_FIELDS and v is not None}
    fraction = hf.get("partial_rotary_factor")
    if fraction:
        position["rotary_fraction"] = fraction
    return position


def _period(pattern: list[str]) -> list[str]:
    for length in range(1, len(pattern) + 1):
        if len(pattern) % length == 0 and pattern == pattern[:length] * (len(pattern) // length):
            return pattern[:length]
    return pattern


def to_hf(model: ModelConfig) -> dict:
    """A Hugging Face config.json dict for a zoo ModelConfig of a supported family."""
    model_type = export_family(model)
    attention, position = model.attention, model.position
    hf: dict[str, Any] = {
        "architectures": [FAMILIES[model_type].architecture],
        "model_type": model_type,
        "vocab_size": model.vocab_size,
        "hidden_size": model.d_model,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "num_key_value_heads": model.num_kv_heads,
        "head_dim": model.head_dim,
        "intermediate_size": model.ffn_dim,
        "hidden_act": next(k for k, v in ACTIVATIONS.items() if v == model.ffn_activation),
        "rms_norm_eps": model.norm_eps,
        "tie_word_embeddings": model.tie_embeddings,
        "max_position_embeddings": model.max_seq_len,
        "attention_bias": attention.out_bias,
        "mlp_bias": model.mlp_bias,
        "dtype": model.param_dtype,
    }
    rope = {"rope_theta": position.rope_theta, "rope_type": next(k for k, v in ROPE_TYPES.items() if v == position.rope_scaling)}
    if position.rope_scaling != "none":
        rope |= {hf_name: getattr(position, name) for hf_name, name in ROPE_FIELDS.items() if getattr(position, name) is not None}
    hf["rope_parameters"] = rope
    hf["rope_theta"] = position.rope_theta
    if model_type != "llama":
        hf["rope_scaling"] = None if position.rope_scaling == "none" else {k: v for k, v in rope.items() if k != "rope_theta"}
    windows = attention.layer_windows()
    if any(w is not None for w in windows):
        hf["sliding_window"] = next(w for w in windows if w is not None)
        pattern = [("sliding_attention" if w is not None else "full_attention") for w in windows]
        hf["layer_types"] = [pattern[i % len(pattern)] for i in range(model.num_layers)]
        hf["use_sliding_window"] = True
    else:
        hf["sliding_window"] = None
    if model_type == "gemma2":
        hf |= {
            "hidden_activation": hf.pop("hidden_act"),
            "query_pre_attn_scalar": model.head_dim,
            "attn_logit_softcapping": attention.logit_softcap,
            "final_logit_softcapping": model.final_logit_softcap,
        }
    if model.moe is not None:
        hf |= {
            "num_local_experts": model.moe.num_experts,
            "num_experts_per_tok": model.moe.top_k,
            "router_aux_loss_coef": model.moe.load_balance_coef,
        }
    return hf


def export_family(model: ModelConfig) -> str:
    """The Hugging Face family a zoo config is exported as; a clear error for configs none fits."""
    attention, position = model.attention, model.position
    unsupported = []
    if model.kind != "decoder":
        unsupported.append(f"model.kind={model.kind!r}")
    if attention.kind != "gqa":
        unsupported.append(f"attention.kind={attention.kind!r}")
    if position.kind != "rope":
        unsupported.append(f"position.kind={position.kind!r}")
    if attention.sinks:
        unsupported.append("attention.sinks")
    if model.norm != "rms":
        unsupported.append(f"norm={model.norm!r}")
    if not model.ffn_gated:
        unsupported.append("ffn_gated=false")
    if model.embedding_norm:
        unsupported.append("embedding_norm")
    if model.moe is not None and (model.moe.router != "softmax" or model.moe.shared_ffn_dim or model.moe.first_dense or model.moe.every != 1 or model.moe.expert_ffn_dim != model.ffn_dim or not model.moe.renormalize):
        unsupported.append("an MoE other than Mixtral's (softmax top-k renormalised in every layer, experts as wide as ffn_dim)")
    if unsupported:
        raise HFConfigError(f"no supported Hugging Face family has {', '.join(unsupported)}; export supports {', '.join(sorted(FAMILIES))}")
    if model.block == "sandwich":
        family = "gemma2"
    elif model.moe is not None:
        family = "mixtral"
    elif attention.qk_norm:
        family = "qwen3"
    elif attention.qkv_bias and not attention.out_bias:
        family = "qwen2"
    elif any(w is not None for w in attention.layer_windows()):
        family = "mistral"
    else:
        family = "llama"
    expected = to_zoo_settings(family)
    mismatched = [k for k, v in expected.items() if getattr(model, k) != v]
    if mismatched or model.block not in ("pre_norm", "sandwich") or attention.logit_softcap and family != "gemma2":
        raise HFConfigError(f"the config looks like {family} but differs in {', '.join(mismatched) or 'its block or soft-capping'}")
    return family


def to_zoo_settings(family: str) -> dict[str, Any]:
    """The top-level model settings a family fixes (besides attention)."""
    return {k: v for k, v in FAMILIES[family].fixed.items() if k != "attention"}
