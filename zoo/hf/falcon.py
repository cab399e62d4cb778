"""Falcon (7B-style): one fused q/k/v projection (multi-query or per-head), attention and
MLP in parallel from one LayerNorm, RoPE, no biases by default."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import HFConfigError, Layout, Rule, LayerRules, fused_qkv, heads_out, layer_norm, same, transposed


def read(hf: Fields) -> dict:
    if hf.bool("new_decoder_architecture", False):
        raise HFConfigError("Falcon's new_decoder_architecture (40B/180B: two norms per layer) is not supported")
    if hf.bool("alibi", False):
        raise HFConfigError("Falcon with alibi=true is not supported; zoo reads the RoPE Falcons")
    hf.expect("num_ln_in_parallel_attn", 1, "it takes two only with new_decoder_architecture")
    hf.expect("apply_residual_connection_post_layernorm", False)  # in older configs
    heads, d_model = hf.int("num_attention_heads"), hf.int("hidden_size")
    multi_query = hf.bool("multi_query", True)
    if multi_query:
        hf.int("num_kv_heads", None)  # transformers uses one key/value head then
    else:
        hf.expect("num_kv_heads", heads, "one key/value head per query head without multi_query")
    kv_heads = 1 if multi_query else heads
    bias, max_position = hf.bool("bias", False), hf.int("max_position_embeddings", 2048)
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": d_model, "num_layers": hf.int("num_hidden_layers"),
        "num_heads": heads, "num_kv_heads": kv_heads, "ffn_dim": hf.int("ffn_hidden_size", 4 * d_model),
        "ffn_activation": shared.activation(hf.str("activation", "gelu")), "ffn_gated": False, "mlp_bias": bias,
        "norm": "layer", "norm_eps": hf.float("layer_norm_epsilon", 1e-5),
        "block": "parallel" if hf.bool("parallel_attn", True) else "pre_norm",
        "tie_embeddings": hf.bool("tie_word_embeddings", True), "max_seq_len": max_position,
        "position": shared.rope(hf, max_position), "attention": {"qkv_bias": bias, "out_bias": bias}, **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    if model.num_kv_heads not in (1, model.num_heads):
        raise HFConfigError("Falcon holds multi-query or multi-head attention only")
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "multi_query": model.num_kv_heads == 1, "num_kv_heads": model.num_kv_heads,
        "ffn_hidden_size": model.ffn_dim, "activation": model.ffn_activation, "bias": model.attention.qkv_bias,
        "layer_norm_epsilon": model.norm_eps, "parallel_attn": model.block == "parallel", "new_decoder_architecture": False,
        "alibi": False, "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len,
        **shared.rope_fields(model),
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    top = [same("transformer.word_embeddings.weight", ("embedder", "embedding", "table")), *layer_norm("transformer.ln_f", ("tower", "final_norm"))]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    p = "transformer.h.{layer}."
    qkv = lambda kind: tuple(("attention", name, kind) for name in "qkv")
    rules: list[Rule] = [
        *layer_norm(p + "input_layernorm", ("attention_norm",)),
        fused_qkv(p + "self_attention.query_key_value.weight", qkv("weight"), kv_heads, heads // kv_heads, head_dim),
        heads_out(p + "self_attention.dense.weight", ("attention", "o", "weight"), heads, head_dim),
        transposed(p + "mlp.dense_h_to_4h.weight", ("ffn", "up", "weight")),
        transposed(p + "mlp.dense_4h_to_h.weight", ("ffn", "down", "weight")),
    ]
    if config.block != "parallel":
        rules += layer_norm(p + "post_attention_layernorm", ("ffn_norm",))
    if config.attention.qkv_bias:
        rules += [
            fused_qkv(p + "self_attention.query_key_value.bias", qkv("bias"), kv_heads, heads // kv_heads, head_dim),
            same(p + "self_attention.dense.bias", ("attention", "o", "bias")),
            same(p + "mlp.dense_h_to_4h.bias", ("ffn", "up", "bias")),
            same(p + "mlp.dense_4h_to_h.bias", ("ffn", "down", "bias")),
        ]
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: rules),))


IDS = {"bos_token_id": 11, "eos_token_id": 11}  # transformers' defaults
# transformers 5.25 writes num_key_value_heads for its caches; the layers take theirs from multi_query and num_kv_heads
INERT = frozenset({"num_key_value_heads"})
FAMILIES = (Family("falcon", "FalconForCausalLM", read, write, layout, INERT, IDS, aliases={"n_embed": "hidden_size"}),)
