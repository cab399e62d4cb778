"""T5: an encoder-decoder with bucketed relative position biases (one table per tower), RMS
norms, unscaled attention and, when the embeddings are tied, outputs scaled by 1/sqrt(D).

zoo scales attention logits by 1/sqrt(Dh) and ties outputs without a scale, so the
import folds sqrt(Dh) into the query weights and, when the checkpoint scales its outputs,
1/sqrt(D) into the decoder's final norm; the export takes them back out.
"""

from __future__ import annotations

import math

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import HFConfigError, Layout, Rule, LayerRules, heads_in, heads_out, same, transposed
from zoo.models.block import LayerSpec


def read(hf: Fields) -> dict:
    projection = hf.str("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    activation = projection.removeprefix("gated-")
    activation = "gelu_new" if activation == "gelu" and gated else activation  # as transformers reads "gated-gelu"
    layers = hf.int("num_layers")
    return {
        "kind": "encoder_decoder", "vocab_size": hf.int("vocab_size"), "d_model": hf.int("d_model"),
        "num_layers": hf.int("num_decoder_layers", layers), "encoder_layers": layers,
        "num_heads": hf.int("num_heads"), "head_dim": hf.int("d_kv"), "ffn_dim": hf.int("d_ff"),
        "ffn_activation": shared.activation(activation), "ffn_gated": gated, "norm": "rms",
        "norm_eps": hf.float("layer_norm_epsilon", 1e-6), "tie_embeddings": hf.bool("tie_word_embeddings", True),
        "max_seq_len": hf.int("n_positions", 512),
        "position": {
            "kind": "relative", "relative_buckets": hf.int("relative_attention_num_buckets", 32),
            "relative_max_distance": hf.int("relative_attention_max_distance", 128),
        },
        **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    if model.kind != "encoder_decoder":
        raise HFConfigError("T5 is an encoder-decoder")
    activation = {"gelu_tanh": "gelu"}.get(model.ffn_activation, model.ffn_activation) if model.ffn_gated else model.ffn_activation
    return {
        "vocab_size": model.vocab_size, "d_model": model.d_model, "num_layers": model.encoder_layers or model.num_layers,
        "num_decoder_layers": model.num_layers, "num_heads": model.num_heads, "d_kv": model.head_dim, "d_ff": model.ffn_dim,
        "feed_forward_proj": ("gated-" if model.ffn_gated else "") + activation, "layer_norm_epsilon": model.norm_eps,
        "tie_word_embeddings": model.tie_embeddings, "n_positions": model.max_seq_len, "is_encoder_decoder": True,
        "relative_attention_num_buckets": model.position.relative_buckets,
        "relative_attention_max_distance": model.position.relative_max_distance,
        "decoder_start_token_id": 0,
    }


def _attention(hf: str, zoo: str, config: ModelConfig) -> list[Rule]:
    """q, k, v, o of one T5 attention; sqrt(Dh) moves into q (T5 does not scale logits)."""
    heads, head_dim = config.num_heads, config.head_dim
    root = math.sqrt(head_dim)
    return [
        Rule(
            f"{hf}.q.weight", ((zoo, "q", "weight"),),
            lambda w: (w.T.reshape(-1, heads, head_dim) * root,), lambda w: (w / root).reshape(w.shape[0], -1).T,
        ),
        heads_in(f"{hf}.k.weight", (zoo, "k", "weight"), heads, head_dim),
        heads_in(f"{hf}.v.weight", (zoo, "v", "weight"), heads, head_dim),
        heads_out(f"{hf}.o.weight", (zoo, "o", "weight"), heads, head_dim),
    ]


def _feed_forward(hf: str, config: ModelConfig) -> list[Rule]:
    names = [("wi_0", "gate"), ("wi_1", "up"), ("wo", "down")] if config.ffn_gated else [("wi", "up"), ("wo", "down")]
    return [transposed(f"{hf}.DenseReluDense.{theirs}.weight", ("ffn", ours, "weight")) for theirs, ours in names]


def _encoder_layer(config: ModelConfig, spec: LayerSpec) -> list[Rule]:
    p = "encoder.block.{layer}.layer."
    return [
        *_attention(p + "0.SelfAttention", "attention", config),
        same(p + "0.layer_norm.weight", ("attention_norm", "scale")),
        *_feed_forward(p + "1", config),
        same(p + "1.layer_norm.weight", ("ffn_norm", "scale")),
    ]


def _decoder_layer(config: ModelConfig, spec: LayerSpec) -> list[Rule]:
    p = "decoder.block.{layer}.layer."
    return [
        *_attention(p + "0.SelfAttention", "attention", config),
        same(p + "0.layer_norm.weight", ("attention_norm", "scale")),
        *_attention(p + "1.EncDecAttention", "cross_attention", config),
        same(p + "1.layer_norm.weight", ("cross_norm", "scale")),
        *_feed_forward(p + "2", config),
        same(p + "2.layer_norm.weight", ("ffn_norm", "scale")),
    ]


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    scaled = config.tie_embeddings if hf is None else hf.bool("scale_decoder_outputs", hf.bool("tie_word_embeddings", True))
    output_scale = config.d_model**-0.5 if scaled else 1.0
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    top = [
        same("shared.weight", ("embedder", "embedding", "table")),
        same(f"encoder.{bias}", ("encoder", "position_scheme", "table")),
        same(f"decoder.{bias}", ("decoder", "position_scheme", "table")),
        same("encoder.final_layer_norm.weight", ("encoder", "final_norm", "scale")),
        Rule(
            "decoder.final_layer_norm.weight", (("decoder", "final_norm", "scale"),),
            lambda w: (w * output_scale,), lambda w: w / output_scale,
        ),
    ]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    towers = (
        LayerRules("encoder", config.encoder_layers or config.num_layers, lambda spec: _encoder_layer(config, spec)),
        LayerRules("decoder", config.num_layers, lambda spec: _decoder_layer(config, spec)),
    )
    copies = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight" if config.tie_embeddings else "")
    return Layout(tuple(top), towers, ignored=lambda name: name in copies)


INERT = frozenset({"dropout_rate", "dense_act_fn", "is_gated_act"})  # transformers derives the last two from feed_forward_proj
ALIASES = {"hidden_size": "d_model", "num_attention_heads": "num_heads", "num_hidden_layers": "num_layers", "head_dim": "d_kv"}
FAMILIES = (Family("t5", "T5ForConditionalGeneration", read, write, layout, INERT, {"eos_token_id": 1}, ALIASES),)
