"""The weight layout of Llama-shaped decoder layers: model.layers.N.self_attn.{q,k,v,o}_proj,
mlp.{gate,up,down}_proj (or a family's experts) and the norms around them, <-> zoo's params.
The Llama-shaped families (zoo.hf.llama) take it whole; the hybrids (Bamba, Falcon-H1) take its
attention and feed-forward rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.config import ModelConfig
from zoo.hf.fields import Fields
from zoo.hf.mapping import Layout, LayerRules, Path, Rule, head_bias, heads_in, heads_out, same, shifted, side_by_side, transposed
from zoo.models.block import LayerSpec

if TYPE_CHECKING:
    from zoo.hf.llama import Variant

PARAMETER_FREE = "layer_without_params"  # OLMo's norm: nothing to store, and transformers' fixed eps 1e-5


def attention_rules(config: ModelConfig, p: str, at: Path = ("attention",), *, fused: bool = False) -> list[Rule]:
    """q_proj, k_proj, v_proj (fused: Phi-3's qkv_proj) and o_proj under `p`, with their biases where
    the config has them (attention.qkv_bias, out_bias), <-> the GroupedQueryAttention at `at`."""
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    counts = {"q": heads, "k": kv_heads, "v": kv_heads}
    rules = [heads_out(p + "o_proj.weight", (*at, "o", "weight"), heads, head_dim)]
    if fused:
        shapes = [(count, head_dim) for count in counts.values()]
        rules.append(side_by_side(p + "qkv_proj.weight", tuple((*at, name, "weight") for name in counts), shapes))
    else:
        rules += [heads_in(p + f"{name}_proj.weight", (*at, name, "weight"), count, head_dim) for name, count in counts.items()]
    if config.attention.qkv_bias:
        rules += [head_bias(p + f"{name}_proj.bias", (*at, name, "bias"), count, head_dim) for name, count in counts.items()]
    if config.attention.out_bias:
        rules.append(same(p + "o_proj.bias", (*at, "o", "bias")))
    return rules


def gated_mlp_rules(config: ModelConfig, p: str) -> list[Rule]:
    """gate_proj, up_proj and down_proj under `p`, with biases where config.mlp_bias, <-> the block's `ffn`."""
    rules = []
    for name in ("gate", "up", "down"):
        rules.append(transposed(p + f"{name}_proj.weight", ("ffn", name, "weight")))
        if config.mlp_bias:
            rules.append(same(p + f"{name}_proj.bias", ("ffn", name, "bias")))
    return rules


def layout(variant: Variant):
    def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
        def scale(module: str, zoo: Path) -> list[Rule]:  # a norm's scale, stored as scale - offset
            return [shifted(module + ".weight", (*zoo, "scale"), variant.offset)]

        def norm(module: str, zoo: Path) -> list[Rule]:  # a norm over d_model: its scale and bias, if any
            if config.norm == PARAMETER_FREE:
                return []
            return scale(module, zoo) + ([same(module + ".bias", (*zoo, "bias"))] if config.norm == "layer" else [])

        top = [same("model.embed_tokens.weight", ("embedder", "embedding", "table")), *norm("model.norm", ("tower", "final_norm"))]
        if not config.tie_embeddings:
            top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
        tower = LayerRules("tower", config.num_layers, lambda spec: _layer(variant, config, spec, norm, scale))
        return Layout(tuple(top), (tower,), ignored=lambda name: "rotary_emb" in name)

    return layout


def _layer(variant: Variant, config: ModelConfig, spec: LayerSpec, norm, scale) -> list[Rule]:
    """The tensors of decoder layer {layer}; `norm` makes the rules of a norm over d_model,
    `scale` that of a QK-norm's scale."""
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    p, attn = "model.layers.{layer}.", ("attention",)
    rules = attention_rules(config, p + "self_attn.", fused=variant.fused)
    if config.block != "post_sublayer_norm":
        rules += norm(p + "input_layernorm", ("attention_norm",))
    if config.attention.sinks:
        rules.append(same(p + "self_attn.sinks", (*attn, "sinks")))
    if config.attention.qk_norm and config.attention.qk_norm_over == "projection":  # [H * Dh] <-> [H, Dh]
        for name, count in (("q", heads), ("k", kv_heads)):
            rules.append(head_bias(p + f"self_attn.{name}_norm.weight", (*attn, f"{name}_norm", "scale"), count, head_dim))
    elif config.attention.qk_norm:
        rules += [rule for n in ("q", "k") for rule in scale(p + f"self_attn.{n}_norm", (*attn, f"{n}_norm"))]
    if config.block == "sandwich":
        rules += [
            *norm(p + "post_attention_layernorm", ("attention_post_norm",)),
            *norm(p + "pre_feedforward_layernorm", ("ffn_norm",)),
            *norm(p + "post_feedforward_layernorm", ("ffn_post_norm",)),
        ]
    elif config.block == "post_sublayer_norm":
        rules += [
            *norm(p + "post_attention_layernorm", ("attention_post_norm",)),
            *norm(p + "post_feedforward_layernorm", ("ffn_post_norm",)),
        ]
    else:
        rules += norm(p + "post_attention_layernorm", ("ffn_norm",))
    if not spec.moe:
        return rules + _mlp(variant, config, p)
    if variant.expert_rules is not None:
        return rules + variant.expert_rules(p)
    return rules + (mlp_experts(p, config.moe.shared_ffn_dim > 0) if variant.experts == "mlp" else _mixtral_experts(p))


def _mixtral_experts(p: str) -> list[Rule]:
    """Mixtral's router and experts under {p}block_sparse_moe."""
    moe = p + "block_sparse_moe."
    return [
        transposed(moe + "gate.weight", ("ffn", "router", "weight")),
        transposed(moe + "experts.{expert}.w1.weight", ("ffn", "experts", "gate")),
        transposed(moe + "experts.{expert}.w3.weight", ("ffn", "experts", "up")),
        transposed(moe + "experts.{expert}.w2.weight", ("ffn", "experts", "down")),
    ]


def mlp_experts(p: str, shared: bool) -> list[Rule]:
    """OLMoE's and Qwen-MoE's router and experts under {p}mlp: gate [E, D], experts.{expert}.gate_proj
    and up_proj [F, D], down_proj [D, F], as transformers' save_pretrained writes them (it splits
    its fused gate_up_proj [E, 2F, D] and down_proj [E, D, F] back into these); with `shared`,
    Qwen2-MoE's shared expert and its gate [1, D]."""
    mlp = p + "mlp."
    rules = [
        transposed(mlp + "gate.weight", ("ffn", "router", "weight")),
        *(transposed(mlp + f"experts.{{expert}}.{n}_proj.weight", ("ffn", "experts", n)) for n in ("gate", "up", "down")),
    ]
    if shared:
        rules += [transposed(mlp + f"shared_expert.{n}_proj.weight", ("ffn", "shared", n, "weight")) for n in ("gate", "up", "down")]
        rules.append(transposed(mlp + "shared_expert_gate.weight", ("ffn", "shared_gate", "weight")))
    return rules


def _mlp(variant: Variant, config: ModelConfig, p: str) -> list[Rule]:
    """The dense feed-forward: gate_proj, up_proj, down_proj (Phi-3: gate_up_proj, down_proj;
    a plain MLP, StarCoder2's: c_fc, c_proj), with biases where the config has them."""
    rules: list[Rule] = []
    if not config.ffn_gated:
        names = {"up": "c_fc", "down": "c_proj"}
    elif variant.fused:
        fused = (("ffn", "gate", "weight"), ("ffn", "up", "weight"))
        rules.append(side_by_side(p + "mlp.gate_up_proj.weight", fused, [(config.ffn_dim,)] * 2))
        names = {"down": "down_proj"}
    else:
        return gated_mlp_rules(config, p + "mlp.")
    for ours, theirs in names.items():
        rules.append(transposed(p + f"mlp.{theirs}.weight", ("ffn", ours, "weight")))
        if config.mlp_bias:
            rules.append(same(p + f"mlp.{theirs}.bias", ("ffn", ours, "bias")))
    return rules
