"""BLOOM: ALiBi, a LayerNorm after the embeddings, q/k/v fused per head, biases everywhere."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.mapping import HFConfigError, Layout, Rule, Tower, fused_qkv, heads_out, layer_norm, same, segments, transposed


def read(hf: dict) -> dict:
    if hf.get("apply_residual_connection_post_layernorm"):
        raise HFConfigError("BLOOM with apply_residual_connection_post_layernorm=true is not supported")
    return {
        "vocab_size": hf["vocab_size"], "d_model": hf["hidden_size"], "num_layers": hf["n_layer"], "num_heads": hf["n_head"],
        "ffn_dim": 4 * hf["hidden_size"], "ffn_activation": "gelu_tanh", "ffn_gated": False, "mlp_bias": True,
        "norm": "layer", "norm_eps": hf.get("layer_norm_epsilon", 1e-5), "embedding_norm": True,
        "tie_embeddings": bool(hf.get("tie_word_embeddings", True)), "max_seq_len": hf.get("seq_length", 2048),
        "position": {"kind": "alibi"}, "attention": {"qkv_bias": True, "out_bias": True}, **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "n_layer": model.num_layers, "n_head": model.num_heads,
        "layer_norm_epsilon": model.norm_eps, "tie_word_embeddings": model.tie_embeddings, "seq_length": model.max_seq_len,
    }


def layout(config: ModelConfig, hf: dict | None = None) -> Layout:
    heads, head_dim = config.num_heads, config.head_dim
    top = [
        same("transformer.word_embeddings.weight", ("embedding", "table")),
        *layer_norm("transformer.word_embeddings_layernorm", ("embedding_norm",)),
        *layer_norm("transformer.ln_f", ("final_norm",)),
    ]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("unembed", "weight")))
    p, attn = "transformer.h.{layer}.", "self_attention."
    qkv = lambda kind: tuple(("attention", name, kind) for name in "qkv")
    rules: list[Rule] = [
        *layer_norm(p + "input_layernorm", ("attention_norm",)),
        fused_qkv(p + attn + "query_key_value.weight", qkv("weight"), heads, 1, head_dim),
        fused_qkv(p + attn + "query_key_value.bias", qkv("bias"), heads, 1, head_dim),
        heads_out(p + attn + "dense.weight", ("attention", "o", "weight"), heads, head_dim),
        same(p + attn + "dense.bias", ("attention", "o", "bias")),
        *layer_norm(p + "post_attention_layernorm", ("ffn_norm",)),
        transposed(p + "mlp.dense_h_to_4h.weight", ("ffn", "up", "weight")),
        same(p + "mlp.dense_h_to_4h.bias", ("ffn", "up", "bias")),
        transposed(p + "mlp.dense_4h_to_h.weight", ("ffn", "down", "weight")),
        same(p + "mlp.dense_4h_to_h.bias", ("ffn", "down", "bias")),
    ]
    return Layout(tuple(top), (Tower(segments(config), config.num_layers, lambda spec: rules),))


FAMILIES = (Family("bloom", "BloomForCausalLM", read, write, layout),)
