"""GPT-2: learned positions, LayerNorm, a GELU MLP, biases everywhere, Conv1D weights [in, out]."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import Layout, Rule, LayerRules, layer_norm, side_by_side, same, transposed


def read(hf: Fields) -> dict:
    hf.expect("scale_attn_weights", True, "attention logits scaled by 1/sqrt(head_dim)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        hf.expect(flag, False)
    d_model = hf.int("n_embd")
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": d_model, "num_layers": hf.int("n_layer"), "num_heads": hf.int("n_head"),
        "ffn_dim": hf.int("n_inner", 4 * d_model), "ffn_activation": shared.activation(hf.str("activation_function", "gelu_new")),
        "ffn_gated": False, "mlp_bias": True, "norm": "layer", "norm_eps": hf.float("layer_norm_epsilon", 1e-5),
        "tie_embeddings": hf.bool("tie_word_embeddings", True), "max_seq_len": hf.int("n_positions"),
        "position": {"kind": "learned"}, "attention": {"qkv_bias": True, "out_bias": True}, **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    return {
        "vocab_size": model.vocab_size, "n_embd": model.d_model, "n_layer": model.num_layers, "n_head": model.num_heads,
        "n_inner": model.ffn_dim, "activation_function": "gelu_new" if model.ffn_activation == "gelu_tanh" else model.ffn_activation,
        "layer_norm_epsilon": model.norm_eps, "n_positions": model.max_seq_len, "tie_word_embeddings": model.tie_embeddings,
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    heads, head_dim, d = config.num_heads, config.head_dim, config.d_model
    top = [
        same("transformer.wte.weight", ("embedder", "embedding", "table")),
        same("transformer.wpe.weight", ("tower", "position_scheme", "table")),
        *layer_norm("transformer.ln_f", ("tower", "final_norm")),
    ]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    p = "transformer.h.{layer}."
    qkv = tuple(("attention", name, "weight") for name in "qkv")
    rules: list[Rule] = [
        *layer_norm(p + "ln_1", ("attention_norm",)),
        side_by_side(p + "attn.c_attn.weight", qkv, [(heads, head_dim)] * 3, rows_out=False),
        side_by_side(p + "attn.c_attn.bias", tuple(("attention", n, "bias") for n in "qkv"), [(heads, head_dim)] * 3),
        Rule(p + "attn.c_proj.weight", (("attention", "o", "weight"),), lambda w: (w.reshape(heads, head_dim, d),), lambda w: w.reshape(-1, d)),
        same(p + "attn.c_proj.bias", ("attention", "o", "bias")),
        *layer_norm(p + "ln_2", ("ffn_norm",)),
        same(p + "mlp.c_fc.weight", ("ffn", "up", "weight")),
        same(p + "mlp.c_fc.bias", ("ffn", "up", "bias")),
        same(p + "mlp.c_proj.weight", ("ffn", "down", "weight")),
        same(p + "mlp.c_proj.bias", ("ffn", "down", "bias")),
    ]
    masks = lambda name: name.endswith((".attn.bias", ".attn.masked_bias"))  # causal-mask buffers of old checkpoints
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: rules),), ignored=masks)


INERT = frozenset({  # dropouts, the double-heads model's summary head, and an old name of n_positions
    "attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_type", "summary_use_proj", "summary_activation",
    "summary_proj_to_labels", "summary_first_dropout", "summary_last_dropout", "n_ctx",
})
ALIASES = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}
IDS = {"bos_token_id": 50256, "eos_token_id": 50256}  # transformers' defaults
FAMILIES = (Family("gpt2", "GPT2LMHeadModel", read, write, layout, INERT, IDS, ALIASES),)
