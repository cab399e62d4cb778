"""GPT-2: learned positions, LayerNorm, a GELU MLP, biases everywhere, Conv1D weights [in, out]."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.mapping import HFConfigError, Layout, Rule, Tower, concatenated, layer_norm, same, segments


def read(hf: dict) -> dict:
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise HFConfigError(f"GPT-2 with {flag}=true is not supported")
    return {
        "vocab_size": hf["vocab_size"], "d_model": hf["n_embd"], "num_layers": hf["n_layer"], "num_heads": hf["n_head"],
        "ffn_dim": hf.get("n_inner") or 4 * hf["n_embd"], "ffn_activation": shared.activation(hf.get("activation_function", "gelu_new")),
        "ffn_gated": False, "mlp_bias": True, "norm": "layer", "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        "tie_embeddings": True, "max_seq_len": hf["n_positions"], "position": {"kind": "learned"},
        "attention": {"qkv_bias": True, "out_bias": True}, **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    return {
        "vocab_size": model.vocab_size, "n_embd": model.d_model, "n_layer": model.num_layers, "n_head": model.num_heads,
        "n_inner": model.ffn_dim, "activation_function": "gelu_new" if model.ffn_activation == "gelu_tanh" else model.ffn_activation,
        "layer_norm_epsilon": model.norm_eps, "n_positions": model.max_seq_len, "tie_word_embeddings": model.tie_embeddings,
    }


def layout(config: ModelConfig, hf: dict | None = None) -> Layout:
    heads, head_dim, d = config.num_heads, config.head_dim, config.d_model
    top = [
        same("transformer.wte.weight", ("embedding", "table")),
        same("transformer.wpe.weight", ("positions", "table")),
        *layer_norm("transformer.ln_f", ("final_norm",)),
    ]
    p = "transformer.h.{layer}."
    qkv = tuple(("attention", name, "weight") for name in "qkv")
    rules: list[Rule] = [
        *layer_norm(p + "ln_1", ("attention_norm",)),
        concatenated(p + "attn.c_attn.weight", qkv, [d] * 3, heads, head_dim),
        concatenated(p + "attn.c_attn.bias", tuple(("attention", n, "bias") for n in "qkv"), [d] * 3, heads, head_dim),
        Rule(p + "attn.c_proj.weight", (("attention", "o", "weight"),), lambda w: (w.reshape(heads, head_dim, d),), lambda w: w.reshape(-1, d)),
        same(p + "attn.c_proj.bias", ("attention", "o", "bias")),
        *layer_norm(p + "ln_2", ("ffn_norm",)),
        same(p + "mlp.c_fc.weight", ("ffn", "up", "weight")),
        same(p + "mlp.c_fc.bias", ("ffn", "up", "bias")),
        same(p + "mlp.c_proj.weight", ("ffn", "down", "weight")),
        same(p + "mlp.c_proj.bias", ("ffn", "down", "bias")),
    ]
    masks = lambda name: name.endswith((".attn.bias", ".attn.masked_bias"))  # causal-mask buffers of old checkpoints
    return Layout(tuple(top), (Tower(segments(config), config.num_layers, lambda spec: rules),), ignored=masks)


FAMILIES = (Family("gpt2", "GPT2LMHeadModel", read, write, layout),)
