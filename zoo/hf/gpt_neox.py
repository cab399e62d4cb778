"""GPT-NeoX (Pythia, GPT-NeoX-20B): q/k/v fused per head, RoPE over a quarter of each head,
LayerNorms, a plain GELU MLP with biases, and attention and MLP in parallel from two norms."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import Layout, Rule, LayerRules, fused_qkv, heads_out, layer_norm, same, transposed


def read(hf: Fields) -> dict:
    bias, max_position = hf.bool("attention_bias", True), hf.int("max_position_embeddings", 2048)
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": hf.int("hidden_size"), "num_layers": hf.int("num_hidden_layers"),
        "num_heads": hf.int("num_attention_heads"), "ffn_dim": hf.int("intermediate_size"),
        "ffn_activation": shared.activation(hf.str("hidden_act", "gelu")), "ffn_gated": False, "mlp_bias": True,
        "norm": "layer", "norm_eps": hf.float("layer_norm_eps", 1e-5),
        "block": "parallel_two_norms" if hf.bool("use_parallel_residual", True) else "pre_norm",
        "tie_embeddings": hf.bool("tie_word_embeddings", False), "max_seq_len": max_position,
        "position": shared.rope(hf, max_position, partial=True), "attention": {"qkv_bias": bias, "out_bias": bias},
        **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "intermediate_size": model.ffn_dim,
        "hidden_act": shared.HF_ACTIVATION[model.ffn_activation], "layer_norm_eps": model.norm_eps,
        "use_parallel_residual": model.block == "parallel_two_norms", "attention_bias": model.attention.qkv_bias,
        "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len,
        **shared.rope_fields(model, partial=True),
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    heads, head_dim = config.num_heads, config.head_dim
    top = [same("gpt_neox.embed_in.weight", ("embedder", "embedding", "table")), *layer_norm("gpt_neox.final_layer_norm", ("tower", "final_norm"))]
    if not config.tie_embeddings:
        top.append(transposed("embed_out.weight", ("head", "unembed", "weight")))
    p = "gpt_neox.layers.{layer}."
    qkv = lambda kind: tuple(("attention", name, kind) for name in "qkv")
    rules: list[Rule] = [
        *layer_norm(p + "input_layernorm", ("attention_norm",)),
        *layer_norm(p + "post_attention_layernorm", ("ffn_norm",)),
        fused_qkv(p + "attention.query_key_value.weight", qkv("weight"), heads, 1, head_dim),  # rows [H, q|k|v, Dh]
        heads_out(p + "attention.dense.weight", ("attention", "o", "weight"), heads, head_dim),
        transposed(p + "mlp.dense_h_to_4h.weight", ("ffn", "up", "weight")),
        same(p + "mlp.dense_h_to_4h.bias", ("ffn", "up", "bias")),
        transposed(p + "mlp.dense_4h_to_h.weight", ("ffn", "down", "weight")),
        same(p + "mlp.dense_4h_to_h.bias", ("ffn", "down", "bias")),
    ]
    if config.attention.qkv_bias:
        rules += [
            fused_qkv(p + "attention.query_key_value.bias", qkv("bias"), heads, 1, head_dim),
            same(p + "attention.dense.bias", ("attention", "o", "bias")),
        ]
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: rules),), ignored=lambda name: "rotary_emb" in name)


DEFAULTS = {  # transformers' defaults
    "bos_token_id": 0, "eos_token_id": 2, "partial_rotary_factor": 0.25, "hidden_act": "gelu",
    "max_position_embeddings": 2048, "attention_bias": True, "use_parallel_residual": True,
}
INERT = frozenset({"hidden_dropout", "classifier_dropout"})
ALIASES = {"rotary_pct": "partial_rotary_factor", "rotary_emb_base": "rope_theta"}  # the names older configs use
FAMILIES = (Family("gpt_neox", "GPTNeoXForCausalLM", read, write, layout, INERT, DEFAULTS, ALIASES),)
