"""BLOOM: ALiBi, a LayerNorm after the embeddings, q/k/v fused per head, biases everywhere."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import Layout, Rule, LayerRules, fused_qkv, heads_out, layer_norm, same, transposed


def read(hf: Fields) -> dict:
    hf.expect("apply_residual_connection_post_layernorm", False)
    d_model = hf.int("hidden_size")
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": d_model, "num_layers": hf.int("n_layer"), "num_heads": hf.int("n_head"),
        "ffn_dim": 4 * d_model, "ffn_activation": "gelu_tanh", "ffn_gated": False, "mlp_bias": True,
        "norm": "layer", "norm_eps": hf.float("layer_norm_epsilon", 1e-5), "embedding_norm": True,
        "tie_embeddings": hf.bool("tie_word_embeddings", True), "max_seq_len": hf.int("seq_length", 2048),
        "position": {"kind": "alibi"}, "attention": {"qkv_bias": True, "out_bias": True}, **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "n_layer": model.num_layers, "n_head": model.num_heads,
        "layer_norm_epsilon": model.norm_eps, "tie_word_embeddings": model.tie_embeddings, "seq_length": model.max_seq_len,
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    heads, head_dim = config.num_heads, config.head_dim
    top = [
        same("transformer.word_embeddings.weight", ("embedder", "embedding", "table")),
        *layer_norm("transformer.word_embeddings_layernorm", ("embedder", "norm")),
        *layer_norm("transformer.ln_f", ("tower", "final_norm")),
    ]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
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
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: rules),))


INERT = frozenset({  # tensor-parallel matmul splits (the same sums), and Megatron settings transformers does not read
    "pretraining_tp", "slow_but_exact", "masked_softmax_fusion", "attention_softmax_in_fp32", "bias_dropout_fusion",
    "offset_alibi", "skip_bias_add", "skip_bias_add_qkv", "n_inner",
})
ALIASES = {"n_embed": "hidden_size", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head"}
IDS = {"bos_token_id": 1, "eos_token_id": 2}  # transformers' defaults
FAMILIES = (Family("bloom", "BloomForCausalLM", read, write, layout, INERT, IDS, ALIASES),)
