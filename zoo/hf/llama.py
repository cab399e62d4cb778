"""The Llama-shaped families: Llama, Mistral, Mixtral, Qwen2, Qwen3 and Gemma 2.

They share tensor names (model.layers.N.self_attn.q_proj, mlp.gate_proj, ...) and
config fields; each differs in a few settings it fixes (Qwen2's q/k/v biases, Qwen3's
QK-norm, Gemma 2's sandwich norms, soft-caps and 1 + w norms) or reads (biases, windows,
experts), which a Variant lists.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from zoo.config import ModelConfig
from zoo.models.block import LayerSpec
from zoo.models.stack import period
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import HFConfigError, Layout, Rule, LayerRules, head_bias, heads_in, heads_out, same, shifted, transposed


@dataclasses.dataclass(frozen=True)
class Variant:
    """fixed: zoo settings the family implies; biases: which of attention_bias / mlp_bias its
    config has; windows: how sliding windows are set: on "every" layer by sliding_window
    (Mistral), "gated" by use_sliding_window on the layers of layer_types (Qwen), or on the
    layers of layer_types (Gemma 2); experts: Mixtral's feed-forwards; offset: norms stored as
    scale - offset; activation: the activation's field and its default; defaults: transformers'
    values of the fields a config may lack, where they are not the reader's fallback."""

    model_type: str
    architecture: str
    fixed: dict = dataclasses.field(default_factory=dict)
    biases: tuple[str, ...] = ()
    windows: str | None = None
    experts: bool = False
    offset: float = 0.0
    activation: tuple[str, str] = ("hidden_act", "silu")
    defaults: dict = dataclasses.field(default_factory=dict)
    inert: frozenset[str] = frozenset()


def _read(variant: Variant, hf: Fields) -> dict:
    heads, layers = hf.int("num_attention_heads"), hf.int("num_hidden_layers")
    max_position = hf.int("max_position_embeddings", 2048)
    model: dict[str, Any] = {
        "vocab_size": hf.int("vocab_size"), "d_model": hf.int("hidden_size"), "num_layers": layers, "num_heads": heads,
        "num_kv_heads": hf.int("num_key_value_heads", heads), "head_dim": hf.int("head_dim", None),
        "ffn_dim": hf.int("intermediate_size"), "ffn_activation": shared.activation(hf.str(*variant.activation)),
        "norm_eps": hf.float("rms_norm_eps", 1e-6), "tie_embeddings": hf.bool("tie_word_embeddings", False),
        "max_seq_len": max_position, "mlp_bias": "mlp_bias" in variant.biases and hf.bool("mlp_bias", False),
        "position": shared.rope(hf, max_position), **shared.dtypes(hf),
    }
    biased = "attention_bias" in variant.biases and hf.bool("attention_bias", False)
    attention: dict[str, Any] = {"qkv_bias": True, "out_bias": True} if biased else {}
    attention |= _windows(variant, hf, layers)
    if variant.model_type == "gemma2":
        head_dim = model["head_dim"] or model["d_model"] // heads
        scalar = hf.float("query_pre_attn_scalar", head_dim)
        if scalar != head_dim:  # logits scaled by its inverse square root
            attention["softmax_scale"] = scalar**-0.5
        attention["logit_softcap"] = hf.float("attn_logit_softcapping", None)
        model["final_logit_softcap"] = hf.float("final_logit_softcapping", None)
        hf.expect("use_bidirectional_attention", False, "Gemma 2 is causal")
    if variant.experts:
        model["moe"] = {
            "num_experts": hf.int("num_local_experts"), "top_k": hf.int("num_experts_per_tok"),
            "expert_ffn_dim": model["ffn_dim"], "router": "softmax", "renormalize": True,
            "load_balance_coef": hf.float("router_aux_loss_coef", 0.01),
            "z_loss_coef": 0.0,  # transformers' Mixtral trains with the balancing loss alone
        }
    fixed = dict(variant.fixed)
    model["attention"] = attention | fixed.pop("attention", {})
    return model | fixed


def _windows(variant: Variant, hf: Fields, num_layers: int) -> dict:
    """The attention's layer_pattern and window (none when no layer has one)."""
    if variant.windows is None:
        return {}
    window = hf.int("sliding_window", None)
    if variant.windows == "every":
        return {} if window is None else {"layer_pattern": ["local"], "window": window}
    kinds = hf.strs("layer_types")
    if variant.windows == "gated":  # transformers' default layer_types: windows from max_window_layers on
        first = hf.int("max_window_layers", 28)
        window = window if hf.bool("use_sliding_window", False) else None
        kinds = kinds or ["sliding_attention" if i >= first else "full_attention" for i in range(num_layers)]
    kinds = kinds or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)]  # Gemma 2's
    if len(kinds) != num_layers or not set(kinds) <= {"sliding_attention", "full_attention"}:
        raise HFConfigError(
            f"config.json: layer_types must be sliding_attention or full_attention for each of the {num_layers} layers, "
            f"not {kinds}"
        )
    pattern = ["local" if kind == "sliding_attention" else "global" for kind in kinds]
    return {"layer_pattern": list(period(pattern)), "window": window} if window is not None and "local" in pattern else {}


def _write(variant: Variant, model: ModelConfig) -> dict:
    attention = model.attention
    if variant.experts != (model.moe is not None):
        raise HFConfigError(f"{variant.model_type} {'has' if variant.experts else 'has no'} experts")
    hf = {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads, "head_dim": model.head_dim,
        "intermediate_size": model.ffn_dim, variant.activation[0]: shared.HF_ACTIVATION[model.ffn_activation],
        "rms_norm_eps": model.norm_eps, "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len,
        **shared.rope_fields(model), **_window_fields(variant, model),
    }
    if "attention_bias" in variant.biases:
        hf["attention_bias"] = attention.out_bias
    if "mlp_bias" in variant.biases:
        hf["mlp_bias"] = model.mlp_bias
    if variant.model_type == "gemma2":
        hf |= {
            "query_pre_attn_scalar": model.head_dim if attention.softmax_scale is None else round(attention.softmax_scale**-2),
            "attn_logit_softcapping": attention.logit_softcap, "final_logit_softcapping": model.final_logit_softcap,
        }
    if variant.experts:
        hf |= {"num_local_experts": model.moe.num_experts, "num_experts_per_tok": model.moe.top_k}
    return hf


def _window_fields(variant: Variant, model: ModelConfig) -> dict:
    if variant.windows is None:
        return {}
    windows = model.attention.layer_windows()
    window = next((w for w in windows if w is not None), None)
    if variant.windows == "every":
        return {"sliding_window": window}
    kinds = ["sliding_attention" if w is not None else "full_attention" for w in windows]
    fields = {"sliding_window": window, "layer_types": [kinds[i % len(kinds)] for i in range(model.num_layers)]}
    return fields | ({"use_sliding_window": window is not None} if variant.windows == "gated" else {})


def _mixtral_experts(p: str) -> list[Rule]:
    """The router and experts of layer prefix `p`, one tensor per expert and projection (Mixtral)."""
    moe = p + "block_sparse_moe."
    return [
        transposed(moe + "gate.weight", ("ffn", "router", "weight")),
        transposed(moe + "experts.{expert}.w1.weight", ("ffn", "experts", "gate")),
        transposed(moe + "experts.{expert}.w3.weight", ("ffn", "experts", "up")),
        transposed(moe + "experts.{expert}.w2.weight", ("ffn", "experts", "down")),
    ]


def _layout(offset: float, experts=_mixtral_experts):
    """The weight layout; `experts`: a layer prefix -> the rules of its MoE feed-forward."""

    def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
        norm = lambda hf, zoo: shifted(hf, zoo, offset)
        top = [same("model.embed_tokens.weight", ("embedder", "embedding", "table")), norm("model.norm.weight", ("tower", "final_norm", "scale"))]
        if not config.tie_embeddings:
            top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
        tower = LayerRules("tower", config.num_layers, lambda spec: _layer(config, spec, norm, experts))
        return Layout(tuple(top), (tower,), ignored=lambda name: "rotary_emb" in name)

    return layout


def _layer(config: ModelConfig, spec: LayerSpec, norm, experts) -> list[Rule]:
    """The tensors of decoder layer {layer}; `norm` makes a norm's rule, `experts` the MoE's rules."""
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    p, attn = "model.layers.{layer}.", ("attention",)
    rules: list[Rule] = [
        heads_in(p + "self_attn.q_proj.weight", (*attn, "q", "weight"), heads, head_dim),
        heads_in(p + "self_attn.k_proj.weight", (*attn, "k", "weight"), kv_heads, head_dim),
        heads_in(p + "self_attn.v_proj.weight", (*attn, "v", "weight"), kv_heads, head_dim),
        heads_out(p + "self_attn.o_proj.weight", (*attn, "o", "weight"), heads, head_dim),
        norm(p + "input_layernorm.weight", ("attention_norm", "scale")),
    ]
    if config.attention.qkv_bias:
        for name, count in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
            rules.append(head_bias(p + f"self_attn.{name}_proj.bias", (*attn, name, "bias"), count, head_dim))
    if config.attention.out_bias:
        rules.append(same(p + "self_attn.o_proj.bias", (*attn, "o", "bias")))
    if config.attention.sinks:
        rules.append(same(p + "self_attn.sinks", (*attn, "sinks")))
    if config.attention.qk_norm:
        rules += [norm(p + f"self_attn.{n}_norm.weight", (*attn, f"{n}_norm", "scale")) for n in ("q", "k")]
    if config.block == "sandwich":
        rules += [
            norm(p + "post_attention_layernorm.weight", ("attention_post_norm", "scale")),
            norm(p + "pre_feedforward_layernorm.weight", ("ffn_norm", "scale")),
            norm(p + "post_feedforward_layernorm.weight", ("ffn_post_norm", "scale")),
        ]
    else:
        rules.append(norm(p + "post_attention_layernorm.weight", ("ffn_norm", "scale")))
    if spec.moe:
        rules += experts(p)
    else:
        for name in ("gate", "up", "down"):
            rules.append(transposed(p + f"mlp.{name}_proj.weight", ("ffn", name, "weight")))
            if config.mlp_bias:
                rules.append(same(p + f"mlp.{name}_proj.bias", ("ffn", name, "bias")))
    return rules


def _family(variant: Variant) -> Family:
    read = lambda hf: _read(variant, hf)
    write = lambda model: _write(variant, model)
    return Family(variant.model_type, variant.architecture, read, write, _layout(variant.offset), variant.inert, variant.defaults)


IDS = {"bos_token_id": 1, "eos_token_id": 2}  # transformers' defaults for Llama, Mistral and Mixtral
MIXTURE = IDS | {"max_position_embeddings": 131072, "num_key_value_heads": 8}  # and Mistral's, Mixtral's
QWEN = {"max_position_embeddings": 32768, "num_key_value_heads": 32, "sliding_window": 4096}
FAMILIES = tuple(_family(v) for v in (
    Variant("llama", "LlamaForCausalLM", biases=("attention_bias", "mlp_bias"), defaults=IDS, inert=frozenset({"pretraining_tp"})),
    Variant(
        "mistral", "MistralForCausalLM", windows="every", defaults=MIXTURE | {"sliding_window": 4096},
        inert=frozenset({"layer_types"}),  # transformers' Mistral warns and ignores them
    ),
    Variant(
        "mixtral", "MixtralForCausalLM", windows="every", experts=True,
        defaults=MIXTURE | {"rms_norm_eps": 1e-5, "rope_theta": 1e6, "router_aux_loss_coef": 0.001},
        inert=frozenset({"router_jitter_noise", "output_router_logits"}),  # training only
    ),
    Variant("qwen2", "Qwen2ForCausalLM", {"attention": {"qkv_bias": True}}, windows="gated", defaults=QWEN),
    Variant(
        "qwen3", "Qwen3ForCausalLM", {"attention": {"qk_norm": True}}, biases=("attention_bias",), windows="gated",
        defaults=QWEN | {"head_dim": 128},
    ),
    Variant(
        "gemma2", "Gemma2ForCausalLM", {"block": "sandwich", "embedding_scale": True}, biases=("attention_bias",),
        windows="layer_types", offset=1.0, activation=("hidden_activation", "gelu_pytorch_tanh"),
        defaults={
            "tie_word_embeddings": True, "head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 8192,
            "bos_token_id": 2, "eos_token_id": 1, "sliding_window": 4096, "query_pre_attn_scalar": 256,
            "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        },
        inert=frozenset({"hidden_act", "sliding_window_size"}),  # names older configs repeat, which transformers does not read
    ),
))
