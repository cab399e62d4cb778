"""The Llama-shaped families: Llama, Mistral, Mixtral, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, Gemma 2,
Gemma 3 (text), Phi-3, StarCoder2, OLMo, OLMo 2 and OLMoE.

They share tensor names (model.layers.N.self_attn.q_proj, mlp.gate_proj, ...) and
config fields; each differs in a few settings it fixes (Qwen2's q/k/v biases, Qwen3's
QK-norm, Gemma 2's sandwich norms, soft-caps and 1 + w norms, Gemma 3's QK-norm and its
RoPE per layer type, StarCoder2's LayerNorms and
plain MLP, OLMo's LayerNorm without parameters, OLMo 2's norms after the sublayers and
QK-norm over the whole projection) or reads (biases, windows, experts, Qwen2-MoE's gated
shared expert, partial RoPE, q/k/v clipping), and in how its checkpoint stores them (Phi-3 fuses q/k/v and gate/up), which a
Variant lists. This module reads and writes their config fields; zoo.hf.decoder_layout maps their weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

from zoo.config import ModelConfig
from zoo.models.stack import period
from zoo.models.wiring import layer_specs
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf import decoder_layout
from zoo.hf.decoder_layout import PARAMETER_FREE
from zoo.hf.mapping import HFConfigError, Rule



@dataclasses.dataclass(frozen=True)
class Variant:
    """fixed: zoo settings the family implies; biases: which of the fields in BIASES its config
    has; windows: how sliding windows are set: on "every" layer by sliding_window (Mistral),
    "gated" by use_sliding_window on the layers of layer_types (Qwen; "gated_even",
    "gated_every": with Qwen2-MoE's and Qwen3-MoE's default layers, see GATED_LAYERS), on the
    layers of layer_types (Gemma 2), or "pattern": those of layer_types, else all but every
    sliding_window_pattern-th (Gemma 3); layer_ropes: rope_parameters per layer type (Gemma 3);
    experts: the feed-forwards are experts, named as Mixtral's ("block_sparse_moe": w1, w3, w2)
    or OLMoE's and Qwen-MoE's ("mlp": gate_proj, up_proj, down_proj), or stored fused ("fused":
    gpt-oss, whose `expert_rules` give a layer prefix's router and expert rules); expert_width: the field
    of their width; sparse_layers: Qwen-MoE's decoder_sparse_step and mlp_only_layers choose
    the expert layers; shared_expert: Qwen2-MoE's gated shared expert; clip_qkv:
    the config has OLMo's clip_qkv; offset: norms stored as scale - offset; activation: the
    activation's field and its default; eps: the norms' epsilon field; fused: q/k/v in one qkv_proj and gate/up in one gate_up_proj (Phi-3); partial_rotary:
    RoPE may rotate part of each head (partial_rotary_factor); defaults: transformers' values of
    the fields a config may lack, where they are not the reader's fallback; aliases: other
    names transformers accepts for a field."""

    model_type: str
    architecture: str
    fixed: dict = dataclasses.field(default_factory=dict)
    biases: tuple[str, ...] = ()
    windows: str | None = None
    layer_ropes: bool = False
    experts: Literal["block_sparse_moe", "mlp", "fused"] | None = None
    expert_rules: Callable[[str], list[Rule]] | None = None
    expert_width: str = "intermediate_size"
    sparse_layers: bool = False
    shared_expert: bool = False
    clip_qkv: bool = False
    offset: float = 0.0
    activation: tuple[str, str] = ("hidden_act", "silu")
    eps: str = "rms_norm_eps"
    fused: bool = False
    partial_rotary: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)
    inert: frozenset[str] = frozenset()
    aliases: dict = dataclasses.field(default_factory=dict)


def _read(variant: Variant, hf: Fields) -> dict:
    heads, layers = hf.int("num_attention_heads"), hf.int("num_hidden_layers")
    max_position = hf.int("max_position_embeddings", 2048)
    model: dict[str, Any] = {
        "vocab_size": hf.int("vocab_size"), "d_model": hf.int("hidden_size"), "num_layers": layers, "num_heads": heads,
        "num_kv_heads": hf.int("num_key_value_heads", heads), "head_dim": hf.int("head_dim", None),
        "ffn_dim": hf.int("intermediate_size"), "ffn_activation": shared.activation(hf.str(*variant.activation)),
        "tie_embeddings": hf.bool("tie_word_embeddings", False),
        "max_seq_len": max_position, "mlp_bias": _biased(variant, hf, "mlp"),
        "position": _layer_type_ropes(hf, max_position) if variant.layer_ropes else
        shared.rope(hf, max_position, partial=variant.partial_rotary),
        **shared.dtypes(hf),
    }
    if variant.fixed.get("norm") != PARAMETER_FREE:
        model["norm_eps"] = hf.float(variant.eps, 1e-6)
    biased = _biased(variant, hf, "attention")
    attention: dict[str, Any] = {"qkv_bias": True, "out_bias": True} if biased else {}
    if _biased(variant, hf, "qkv"):
        attention["qkv_bias"] = True
    attention |= _windows(variant, hf, layers)
    if "local" not in attention.get("layer_pattern", ()):
        model["position"].pop("local", None)  # no layer to use it
    if variant.clip_qkv:
        attention["clip_qkv"] = hf.float("clip_qkv", None)
    if variant.model_type in GEMMAS:
        head_dim = model["head_dim"] or model["d_model"] // heads
        scalar = hf.float("query_pre_attn_scalar", head_dim)
        if scalar != head_dim:  # logits scaled by its inverse square root
            attention["softmax_scale"] = scalar**-0.5
        if variant.model_type == "gemma2":
            attention["logit_softcap"] = hf.float("attn_logit_softcapping", None)
        model["final_logit_softcap"] = hf.float("final_logit_softcapping", None)
        hf.expect("use_bidirectional_attention", False, f"{GEMMAS[variant.model_type]} is causal")
    if variant.model_type == "olmoe":  # transformers sizes its q_norm by hidden_size
        hf.expect("head_dim", model["d_model"] // heads, "OLMoE's heads are hidden_size / num_attention_heads wide")
    if variant.experts:
        mixtral = variant.experts != "mlp"  # Mixtral's fields (gpt-oss's too)
        shared_dim = hf.int("shared_expert_intermediate_size") if variant.shared_expert else 0
        model["moe"] = {
            "num_experts": hf.int("num_local_experts" if mixtral else "num_experts"), "top_k": hf.int("num_experts_per_tok"),
            "expert_ffn_dim": hf.int(variant.expert_width), "router": "softmax",
            "renormalize": True if mixtral else hf.bool("norm_topk_prob", False),
            "shared_ffn_dim": shared_dim, "shared_gate": shared_dim > 0,
            **(sparse_layers(hf, layers) if variant.sparse_layers else {}),
            "load_balance_coef": hf.float("router_aux_loss_coef", 0.01),
            "z_loss_coef": 0.0,  # transformers' Mixtral, OLMoE and Qwen-MoE train with the balancing loss alone
        }
    fixed = dict(variant.fixed)
    model["attention"] = attention | fixed.pop("attention", {})
    return model | fixed


# bias fields -> what they give biases: "attention" q/k/v and o, "qkv" q/k/v alone (Qwen2-MoE), "mlp"
BIASES = {"attention_bias": ("attention",), "mlp_bias": ("mlp",), "use_bias": ("attention", "mlp"), "qkv_bias": ("qkv",)}


def _biased(variant: Variant, hf: Fields, part: str) -> bool:
    """Whether the config gives `part`'s projections ("attention", "qkv" or "mlp") biases."""
    return any(part in BIASES[name] and hf.bool(name, False) for name in variant.biases)


def _layer_type_ropes(hf: Fields, max_position: int) -> dict:
    """[model.position] of Gemma 3: the full_attention layers' RoPE, with the sliding_attention
    layers' as its `local` where it differs. transformers 5 writes one set of rope_parameters per
    layer type; older configs give the global layers' scaling as rope_scaling, their theta as
    rope_theta and the local layers' theta as rope_local_base_freq."""
    layered = hf.section("rope_parameters")
    of_type = lambda kind: (layered and layered.section(kind)) or Fields({}, f"{hf.where} rope_parameters.{kind}", hf.family)
    full, sliding = of_type("full_attention"), of_type("sliding_attention")
    older = hf.section("rope_scaling")
    if older is not None:
        if full.data:
            raise HFConfigError(f"{hf.where}: rope_scaling and rope_parameters.full_attention both set the global layers' RoPE")
        full = older
    position = shared.rope(hf, max_position, full)
    local = shared.rope(hf, max_position, sliding, theta_field="rope_local_base_freq")
    return position | ({} if local == position else {"local": local})


def sparse_layers(hf: Fields, num_layers: int) -> dict:
    """moe.first_dense, every and offset from Qwen-MoE's choice of layers: experts in layer i
    when (i + 1) % decoder_sparse_step == 0 and i is not in mlp_only_layers."""
    step, dense = hf.int("decoder_sparse_step"), hf.value("mlp_only_layers") or []
    if step < 1 or not (isinstance(dense, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in dense)):
        raise HFConfigError(
            f"config.json: decoder_sparse_step must be a positive integer and mlp_only_layers a list of layer indices, "
            f"not {step!r} and {dense!r}"
        )
    sparse = [i for i in range(num_layers) if (i + 1) % step == 0 and i not in dense]
    return shared.moe_layers(sparse, num_layers, f"decoder_sparse_step={step} and mlp_only_layers={dense}")


GATED_LAYERS = {  # transformers' default layer_types under use_sliding_window, by layer i and max_window_layers m
    "gated": lambda i, m: i >= m,  # Qwen2: from layer m on
    "gated_even": lambda i, m: i % 2 == 0 and i < m,  # Qwen2-MoE: the even layers below m
}


def _windows(variant: Variant, hf: Fields, num_layers: int) -> dict:
    """The attention's layer_pattern and window (none when no layer has one)."""
    if variant.windows is None:
        return {}
    window = hf.int("sliding_window", None)
    if variant.windows.startswith("gated") and not hf.bool("use_sliding_window", False):
        window = None
    if variant.windows in ("every", "gated_every"):  # gated_every: Qwen3-MoE's, on every layer under use_sliding_window
        return {} if window is None else {"layer_pattern": ["local"], "window": window}
    kinds = hf.strs("layer_types")
    if variant.windows in GATED_LAYERS:
        first = hf.int("max_window_layers", 28)
        sliding = GATED_LAYERS[variant.windows]
        kinds = kinds or ["sliding_attention" if sliding(i, first) else "full_attention" for i in range(num_layers)]
    if variant.windows == "pattern":  # transformers' default layer_types: every pattern-th layer global
        every = hf.int("sliding_window_pattern", 6)
        kinds = kinds or ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(num_layers)]
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
    if bool(variant.experts) != (model.moe is not None):
        raise HFConfigError(f"{variant.model_type} {'has' if variant.experts else 'has no'} experts")
    hf = {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_kv_heads, "head_dim": model.head_dim,
        "intermediate_size": model.ffn_dim, variant.activation[0]: shared.HF_ACTIVATION[model.ffn_activation],
        "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len,
        **(_layer_type_rope_fields(model) if variant.layer_ropes else shared.rope_fields(model, partial=variant.partial_rotary)),
        **_window_fields(variant, model),
    }
    if variant.fixed.get("norm") != PARAMETER_FREE:
        hf[variant.eps] = model.norm_eps
    if variant.clip_qkv:
        hf["clip_qkv"] = attention.clip_qkv
    for name in variant.biases:
        given = {"attention": attention.out_bias, "qkv": attention.qkv_bias, "mlp": model.mlp_bias}
        parts = [given[part] for part in BIASES[name]]
        if len(set(parts)) > 1:
            raise HFConfigError(f"{variant.model_type}'s {name} gives attention and MLP biases alike")
        hf[name] = parts[0]
    if variant.model_type in GEMMAS:
        hf |= {
            "query_pre_attn_scalar": model.head_dim if attention.softmax_scale is None else round(attention.softmax_scale**-2),
            "final_logit_softcapping": model.final_logit_softcap,
        }
    if variant.model_type == "gemma2":
        hf["attn_logit_softcapping"] = attention.logit_softcap
    if variant.experts in ("block_sparse_moe", "fused"):
        hf |= {"num_local_experts": model.moe.num_experts, "num_experts_per_tok": model.moe.top_k}
    moe = model.moe
    if variant.experts == "mlp":
        hf |= {
            "num_experts": moe.num_experts, "num_experts_per_tok": moe.top_k, "norm_topk_prob": moe.renormalize,
            variant.expert_width: moe.expert_ffn_dim, "router_aux_loss_coef": moe.load_balance_coef,
        }
    if variant.sparse_layers:  # the dense layers named one by one, which holds any first_dense and every
        dense = [i for i, spec in enumerate(layer_specs(model, model.num_layers)) if not spec.moe]
        hf |= {"decoder_sparse_step": 1, "mlp_only_layers": dense}
    if variant.shared_expert:
        hf["shared_expert_intermediate_size"] = moe.shared_ffn_dim
    return hf


def _layer_type_rope_fields(model: ModelConfig) -> dict:
    """Gemma 3's rope_parameters: one set per layer type (the local layers' as the global ones' without position.local)."""
    position = model.position
    return {"rope_parameters": {
        "full_attention": shared.rope_parameter_fields(position),
        "sliding_attention": shared.rope_parameter_fields(position.local or position),
    }}


def _window_fields(variant: Variant, model: ModelConfig) -> dict:
    if variant.windows is None:
        return {}
    windows = model.attention.layer_windows()
    window = next((w for w in windows if w is not None), None)
    if variant.windows == "every":
        return {"sliding_window": window}
    if variant.windows == "gated_every":
        return {"sliding_window": window, "use_sliding_window": window is not None}
    kinds = ["sliding_attention" if w is not None else "full_attention" for w in windows]
    fields = {"sliding_window": window, "layer_types": [kinds[i % len(kinds)] for i in range(model.num_layers)]}
    return fields | ({"use_sliding_window": window is not None} if variant.windows in GATED_LAYERS else {})


def _family(variant: Variant) -> Family:
    read = lambda hf: _read(variant, hf)
    write = lambda model: _write(variant, model)
    return Family(
        variant.model_type, variant.architecture, read, write, decoder_layout.layout(variant), variant.inert, variant.defaults, variant.aliases
    )


GEMMAS = {"gemma2": "Gemma 2", "gemma3_text": "Gemma 3"}  # query_pre_attn_scalar, final soft-cap, causal only
IDS = {"bos_token_id": 1, "eos_token_id": 2}  # transformers' defaults for Llama, Mistral and Mixtral
MIXTURE = IDS | {"max_position_embeddings": 131072, "num_key_value_heads": 8}  # and Mistral's, Mixtral's
OLMO = {"eos_token_id": 50279}  # transformers' OLMo, OLMo 2 and OLMoE (bos_token_id: none)
OLMO2_QK_NORM = {"qk_norm": True, "qk_norm_over": "projection"}  # one RMSNorm over all of q, one over all of k
QWEN = {"max_position_embeddings": 32768, "num_key_value_heads": 32, "sliding_window": 4096}
QWEN_MOE = {  # transformers' Qwen-MoE defaults
    "max_position_embeddings": 32768, "sliding_window": 4096, "decoder_sparse_step": 1, "norm_topk_prob": False,
    "router_aux_loss_coef": 0.001,
}
FAMILIES = tuple(_family(v) for v in (
    Variant("llama", "LlamaForCausalLM", biases=("attention_bias", "mlp_bias"), defaults=IDS, inert=frozenset({"pretraining_tp"})),
    Variant(
        "mistral", "MistralForCausalLM", windows="every", defaults=MIXTURE | {"sliding_window": 4096},
        inert=frozenset({"layer_types"}),  # transformers' Mistral warns and ignores them
    ),
    Variant(
        "mixtral", "MixtralForCausalLM", windows="every", experts="block_sparse_moe",
        defaults=MIXTURE | {"rms_norm_eps": 1e-5, "rope_theta": 1e6, "router_aux_loss_coef": 0.001},
        inert=frozenset({"router_jitter_noise", "output_router_logits"}),  # training only
    ),
    Variant("qwen2", "Qwen2ForCausalLM", {"attention": {"qkv_bias": True}}, windows="gated", defaults=QWEN),
    Variant(
        "qwen3", "Qwen3ForCausalLM", {"attention": {"qk_norm": True}}, biases=("attention_bias",), windows="gated",
        defaults=QWEN | {"head_dim": 128},
    ),
    Variant(
        "qwen2_moe", "Qwen2MoeForCausalLM", biases=("qkv_bias",), windows="gated_even", experts="mlp",
        expert_width="moe_intermediate_size", sparse_layers=True, shared_expert=True,
        defaults=QWEN_MOE | {
            "num_key_value_heads": 16, "qkv_bias": True, "num_experts": 60, "num_experts_per_tok": 4,
            "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
        },
        inert=frozenset({"output_router_logits"}),  # training only
    ),
    Variant(
        "qwen3_moe", "Qwen3MoeForCausalLM", {"attention": {"qk_norm": True}}, biases=("attention_bias",), windows="gated_every",
        experts="mlp", expert_width="moe_intermediate_size", sparse_layers=True,
        defaults=QWEN_MOE | {"num_key_value_heads": 4, "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768},
        # training only; max_window_layers, which Qwen3-MoE checkpoints carry and its transformers class does not read
        inert=frozenset({"output_router_logits", "max_window_layers"}),
        aliases={"num_local_experts": "num_experts"},  # the name transformers writes
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
    Variant(
        "gemma3_text", "Gemma3ForCausalLM", {"block": "sandwich", "embedding_scale": True, "attention": {"qk_norm": True}},
        biases=("attention_bias",), windows="pattern", layer_ropes=True, offset=1.0,
        activation=("hidden_activation", "gelu_pytorch_tanh"),
        defaults={
            "tie_word_embeddings": True, "head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 131072,
            "bos_token_id": 2, "eos_token_id": 1, "sliding_window": 4096, "query_pre_attn_scalar": 256,
            "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
        },
        # transformers 5's copy of the pattern (it reads layer_types); an attention soft-cap its Gemma 3
        # keeps in the config but never applies (Gemma 3 has QK-norm instead; the parity case sets one)
        inert=frozenset({"_sliding_window_pattern", "attn_logit_softcapping"}),
    ),
    Variant(
        "phi3", "Phi3ForCausalLM", windows="every", fused=True, partial_rotary=True,
        defaults={
            "bos_token_id": 1, "eos_token_id": 32000, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096,
        },
        # dropouts; the trained length, which only LongRoPE reads
        inert=frozenset({"resid_pdrop", "embd_pdrop", "original_max_position_embeddings"}),
    ),
    Variant(
        "starcoder2", "Starcoder2ForCausalLM", {"norm": "layer", "ffn_gated": False}, biases=("use_bias",), windows="every",
        activation=("hidden_act", "gelu_pytorch_tanh"), eps="norm_epsilon",
        defaults={
            "use_bias": True, "tie_word_embeddings": True, "norm_epsilon": 1e-5, "max_position_embeddings": 4096,
            "num_key_value_heads": 2, "bos_token_id": 50256, "eos_token_id": 50256,
        },
        inert=frozenset({"residual_dropout", "embedding_dropout"}),
    ),
    Variant(
        "olmo", "OlmoForCausalLM", {"norm": PARAMETER_FREE, "norm_eps": 1e-5}, biases=("attention_bias",), clip_qkv=True,
        defaults=OLMO,
    ),
    Variant(
        "olmo2", "Olmo2ForCausalLM", {"block": "post_sublayer_norm", "attention": OLMO2_QK_NORM}, biases=("attention_bias",),
        defaults=OLMO | {"rms_norm_eps": 1e-5},
    ),
    Variant(
        "olmoe", "OlmoeForCausalLM", {"attention": OLMO2_QK_NORM}, biases=("attention_bias",), experts="mlp", clip_qkv=True,
        defaults=OLMO | {
            "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "num_experts": 64, "num_experts_per_tok": 8,
            "norm_topk_prob": False,
        },
        inert=frozenset({"output_router_logits"}),  # training only
    ),
))
