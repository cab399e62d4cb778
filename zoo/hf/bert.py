"""BERT (masked-LM checkpoints): a post-norm encoder with learned positions, token types, a
LayerNorm after the embeddings and a dense + GELU + LayerNorm prediction head."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import Layout, Rule, LayerRules, head_bias, heads_in, heads_out, layer_norm, same, transposed


def read(hf: Fields) -> dict:
    hf.expect("position_embedding_type", "absolute")
    hf.expect("is_decoder", False, "BERT's encoder sees the whole sequence")
    hf.expect("add_cross_attention", False)
    return {
        "kind": "encoder", "vocab_size": hf.int("vocab_size"), "d_model": hf.int("hidden_size"),
        "num_layers": hf.int("num_hidden_layers"), "num_heads": hf.int("num_attention_heads"), "ffn_dim": hf.int("intermediate_size"),
        "ffn_activation": shared.activation(hf.str("hidden_act", "gelu")), "ffn_gated": False, "mlp_bias": True,
        "norm": "layer", "norm_eps": hf.float("layer_norm_eps", 1e-12), "block": "post_norm", "embedding_norm": True,
        "token_types": hf.int("type_vocab_size", 2), "mlm_head": True, "tie_embeddings": hf.bool("tie_word_embeddings", True),
        "max_seq_len": hf.int("max_position_embeddings", 512), "position": {"kind": "learned"},
        "attention": {"qkv_bias": True, "out_bias": True}, **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "intermediate_size": model.ffn_dim, "hidden_act": model.ffn_activation,
        "layer_norm_eps": model.norm_eps, "type_vocab_size": model.token_types, "tie_word_embeddings": model.tie_embeddings,
        "max_position_embeddings": model.max_seq_len, "position_embedding_type": "absolute",
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    heads, head_dim = config.num_heads, config.head_dim
    e, head = "bert.embeddings.", "cls.predictions."
    top = [
        same(e + "word_embeddings.weight", ("embedder", "embedding", "table")),
        same(e + "position_embeddings.weight", ("tower", "position_scheme", "table")),
        same(e + "token_type_embeddings.weight", ("embedder", "token_type_embedding", "table")),
        *layer_norm(e + "LayerNorm", ("embedder", "norm")),
        transposed(head + "transform.dense.weight", ("head", "mlm", "transform", "weight")),
        same(head + "transform.dense.bias", ("head", "mlm", "transform", "bias")),
        *layer_norm(head + "transform.LayerNorm", ("head", "mlm", "norm")),
        same(head + "bias", ("head", "mlm", "bias")),
    ]
    if not config.tie_embeddings:
        top.append(transposed(head + "decoder.weight", ("head", "unembed", "weight")))
    p = "bert.encoder.layer.{layer}."
    rules: list[Rule] = []
    for theirs, ours in (("query", "q"), ("key", "k"), ("value", "v")):
        rules += [
            heads_in(p + f"attention.self.{theirs}.weight", ("attention", ours, "weight"), heads, head_dim),
            head_bias(p + f"attention.self.{theirs}.bias", ("attention", ours, "bias"), heads, head_dim),
        ]
    rules += [
        heads_out(p + "attention.output.dense.weight", ("attention", "o", "weight"), heads, head_dim),
        same(p + "attention.output.dense.bias", ("attention", "o", "bias")),
        *layer_norm(p + "attention.output.LayerNorm", ("attention_norm",)),
        transposed(p + "intermediate.dense.weight", ("ffn", "up", "weight")),
        same(p + "intermediate.dense.bias", ("ffn", "up", "bias")),
        transposed(p + "output.dense.weight", ("ffn", "down", "weight")),
        same(p + "output.dense.bias", ("ffn", "down", "bias")),
        *layer_norm(p + "output.LayerNorm", ("ffn_norm",)),
    ]
    unused_heads = ("bert.pooler.", "cls.seq_relationship.", "bert.embeddings.position_ids")  # next-sentence prediction

    def ignored(name: str) -> bool:
        tied = config.tie_embeddings and name in (head + "decoder.weight", head + "decoder.bias")  # copies of tied tensors
        return tied or name.startswith(unused_heads)

    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: rules),), ignored=ignored)


INERT = frozenset({  # dropouts, and the pooler (left out) and script direction of older configs
    "hidden_dropout_prob", "attention_probs_dropout_prob", "directionality", "pooler_fc_size",
    "pooler_num_attention_heads", "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type",
})
FAMILIES = (Family("bert", "BertForMaskedLM", read, write, layout, INERT),)
