"""The Llama-shaped families: Llama, Mistral, Mixtral, Qwen2, Qwen3 and Gemma 2.

They share tensor names (model.layers.N.self_attn.q_proj, mlp.gate_proj, ...) and
config fields; each differs in a few settings it fixes (Qwen2's q/k/v biases, Qwen3's
QK-norm, Gemma 2's sandwich norms, soft-caps and 1 + w norms) or reads (windows, experts).
"""

from __future__ import annotations

from typing import Any

from zoo.config import ModelConfig
from zoo.models.block import LayerSpec
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.mapping import Layout, Rule, Tower, head_bias, heads_in, heads_out, same, segments, shifted, transposed


def _read(model_type: str, fixed: dict, windows: bool, experts: bool):
    def read(hf: dict) -> dict:
        model: dict[str, Any] = {
            "vocab_size": hf["vocab_size"],
            "d_model": hf["hidden_size"],
            "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"],
            "num_kv_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
            "ffn_dim": hf["intermediate_size"],
            "ffn_activation": shared.activation(hf.get("hidden_activation") or hf.get("hidden_act", "silu")),
            "norm_eps": hf.get("rms_norm_eps", 1e-6),
            "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
            "max_seq_len": hf.get("max_position_embeddings", 2048),
            "mlp_bias": bool(hf.get("mlp_bias", False)),
            "position": shared.rope(hf),
            **shared.dtypes(hf),
        }
        if hf.get("head_dim"):
            model["head_dim"] = hf["head_dim"]
        attention: dict[str, Any] = {"qkv_bias": True, "out_bias": True} if hf.get("attention_bias") else {}
        window = hf.get("sliding_window") if windows and hf.get("use_sliding_window", model_type != "qwen2") else None
        if window:
            kinds = ["local" if kind == "sliding_attention" else "global" for kind in hf.get("layer_types") or ["sliding_attention"]]
            attention |= {"layer_pattern": _period(kinds), "window": window}
        if model_type == "gemma2":
            head_dim = model.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
            if hf.get("query_pre_attn_scalar", head_dim) != head_dim:  # logits scaled by its inverse square root
                attention["softmax_scale"] = hf["query_pre_attn_scalar"] ** -0.5
            attention["logit_softcap"] = hf.get("attn_logit_softcapping")
            model["final_logit_softcap"] = hf.get("final_logit_softcapping")
        if experts:
            model["moe"] = {
                "num_experts": hf["num_local_experts"], "top_k": hf["num_experts_per_tok"], "expert_ffn_dim": hf["intermediate_size"],
                "router": "softmax", "renormalize": True, "load_balance_coef": hf.get("router_aux_loss_coef", 0.01),
            }
        fixed_model = dict(fixed)
        model["attention"] = attention | fixed_model.pop("attention", {})
        return model | fixed_model

    return read


def _period(kinds: list[str]) -> list[str]:
    for length in range(1, len(kinds) + 1):
        if len(kinds) % length == 0 and kinds == kinds[:length] * (len(kinds) // length):
            return kinds[:length]
    return kinds


def _write(model_type: str):
    def write(model: ModelConfig) -> dict:
        attention = model.attention
        hf = {
            "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
            "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads, "head_dim": model.head_dim,
            "intermediate_size": model.ffn_dim, "hidden_act": shared.HF_ACTIVATION[model.ffn_activation],
            "rms_norm_eps": model.norm_eps, "tie_word_embeddings": model.tie_embeddings,
            "max_position_embeddings": model.max_seq_len, "attention_bias": attention.out_bias, "mlp_bias": model.mlp_bias,
            **shared.rope_fields(model),
        }
        windows = attention.layer_windows()
        hf["sliding_window"] = next((w for w in windows if w is not None), None)
        kinds = ["sliding_attention" if w is not None else "full_attention" for w in windows]
        if hf["sliding_window"] is not None:
            hf["use_sliding_window"] = True
        if len(set(kinds)) > 1 or model_type == "gemma2":
            hf["layer_types"] = [kinds[i % len(kinds)] for i in range(model.num_layers)]
        if model_type == "gemma2":
            hf |= {
                "hidden_activation": hf.pop("hidden_act"),
                "query_pre_attn_scalar": model.head_dim if attention.softmax_scale is None else round(attention.softmax_scale**-2),
                "attn_logit_softcapping": attention.logit_softcap, "final_logit_softcapping": model.final_logit_softcap,
            }
        if model.moe is not None:
            hf |= {"num_local_experts": model.moe.num_experts, "num_experts_per_tok": model.moe.top_k}
        return hf

    return write


def _layout(offset: float):
    def layout(config: ModelConfig, hf: dict | None = None) -> Layout:
        norm = lambda hf, zoo: shifted(hf, zoo, offset)
        top = [same("model.embed_tokens.weight", ("embedding", "table")), norm("model.norm.weight", ("final_norm", "scale"))]
        if not config.tie_embeddings:
            top.append(transposed("lm_head.weight", ("unembed", "weight")))
        tower = Tower(segments(config), config.num_layers, lambda spec: _layer(config, spec, norm))
        return Layout(tuple(top), (tower,), ignored=lambda name: "rotary_emb" in name)

    return layout


def _layer(config: ModelConfig, spec: LayerSpec, norm) -> list[Rule]:
    """The tensors of decoder layer {layer}; `norm` makes a norm's rule."""
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
        moe = p + "block_sparse_moe."
        rules += [
            transposed(moe + "gate.weight", ("ffn", "router", "weight")),
            transposed(moe + "experts.{expert}.w1.weight", ("ffn", "experts", "gate")),
            transposed(moe + "experts.{expert}.w3.weight", ("ffn", "experts", "up")),
            transposed(moe + "experts.{expert}.w2.weight", ("ffn", "experts", "down")),
        ]
    else:
        for name in ("gate", "up", "down"):
            rules.append(transposed(p + f"mlp.{name}_proj.weight", ("ffn", name, "weight")))
            if config.mlp_bias:
                rules.append(same(p + f"mlp.{name}_proj.bias", ("ffn", name, "bias")))
    return rules


def _family(model_type, architecture, fixed=None, *, offset=0.0, windows=True, experts=False) -> Family:
    """fixed: settings the family implies; offset: norms stored as scale - offset; windows:
    whether it has sliding-window layers; experts: whether its feed-forwards are Mixtral's."""
    read = _read(model_type, fixed or {}, windows, experts)
    return Family(model_type, architecture, read, _write(model_type), _layout(offset))


FAMILIES = (
    _family("llama", "LlamaForCausalLM", windows=False),
    _family("mistral", "MistralForCausalLM"),
    _family("mixtral", "MixtralForCausalLM", experts=True),
    _family("qwen2", "Qwen2ForCausalLM", {"attention": {"qkv_bias": True}}),
    _family("qwen3", "Qwen3ForCausalLM", {"attention": {"qk_norm": True}}),
    _family("gemma2", "Gemma2ForCausalLM", {"block": "sandwich", "embedding_scale": True, "tie_embeddings": True}, offset=1.0),
)
