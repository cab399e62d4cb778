"""DeepSeek-V2, -V3 and -V3.2: multi-head latent attention, routed experts with shared ones,
first dense layers. V2 routes by softmax scores (greedy top-k), V3 by sigmoid scores plus the
auxiliary-loss-free balancing bias, within the best groups. V3.2 is V3 with DeepSeek Sparse
Attention: each layer's lightning indexer (self_attn.indexer) picks the keys each query sees.

Its checkpoints keep each head's RoPE dims interleaved (pairs side by side; V3's say so by
`rope_interleave`); zoo rotates halves, so those rows are reordered on the way in and back
on the way out.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import HFConfigError, Layout, Rule, LayerRules, heads_in, heads_out, rope_halves, same, transposed
from zoo.models.block import LayerSpec


def _read(version: int):
    return lambda hf: read(hf, version)


def read(hf: Fields, version: int) -> dict:
    heads, max_position = hf.int("num_attention_heads"), hf.int("max_position_embeddings", 4096)
    position = shared.rope(hf, max_position)
    nope, rope = hf.int("qk_nope_head_dim"), hf.int("qk_rope_head_dim")
    scale = None
    mscale_all_dim = shared.rope_parameters(hf).float("mscale_all_dim", None) if position["rope_scaling"] == "yarn" else None
    if mscale_all_dim:  # DeepSeek scales the logits by mscale^2 too
        mscale = shared.yarn_mscale(position["scaling_factor"], mscale_all_dim)
        scale = (nope + rope) ** -0.5 * mscale * mscale
    hf.expect("attention_bias", False, "multi-head latent attention has no biases")
    hf.expect("num_key_value_heads", heads, "multi-head latent attention has a key and value per query head")
    hf.expect("moe_layer_freq", 1, "experts in every layer after the first dense ones")
    hf.expect("scoring_func", "softmax" if version == 2 else "sigmoid")
    groups, top_groups = hf.int("n_group", None) or 1, hf.int("topk_group", None) or 1
    if version == 2:
        hf.expect("mlp_bias", False)
        hf.expect("norm_topk_prob", False, "transformers' DeepSeek-V2 does not renormalise the chosen weights")
        method = hf.str("topk_method", "greedy")
        if method not in ("greedy", "group_limited_greedy") or method != "greedy" and groups > 1:
            raise HFConfigError(f"DeepSeek-V2's topk_method={method!r} is not supported; zoo reads greedy routing")
        router = {"router": "softmax", "renormalize": False}
    else:
        hf.expect("topk_method", "noaux_tc")
        router = {"router": "sigmoid", "renormalize": hf.bool("norm_topk_prob", True), "num_groups": groups, "top_groups": top_groups}
    experts = hf.int("moe_intermediate_size")
    sparse = {}
    if version == 32:
        hf.expect("mlp_bias", False)
        sparse = {"index_heads": hf.int("index_n_heads"), "index_head_dim": hf.int("index_head_dim"), "index_top_k": hf.int("index_topk")}
        _expect_layer_types(hf)
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": hf.int("hidden_size"), "num_layers": hf.int("num_hidden_layers"),
        "num_heads": heads, "ffn_dim": hf.int("intermediate_size"),
        "ffn_activation": shared.activation(hf.str("hidden_act", "silu")), "norm_eps": hf.float("rms_norm_eps", 1e-6),
        "tie_embeddings": hf.bool("tie_word_embeddings", False), "max_seq_len": max_position, "position": position,
        "attention": {
            "kind": "mla", "kv_lora_rank": hf.int("kv_lora_rank"), "q_lora_rank": hf.int("q_lora_rank", None),
            "qk_nope_head_dim": nope, "qk_rope_head_dim": rope, "v_head_dim": hf.int("v_head_dim"), "softmax_scale": scale,
            **sparse,
        },
        "moe": {
            "num_experts": hf.int("n_routed_experts"), "top_k": hf.int("num_experts_per_tok"), "expert_ffn_dim": experts,
            "shared_ffn_dim": hf.int("n_shared_experts", 0) * experts, "first_dense": hf.int("first_k_dense_replace", 0),
            "routed_scale": hf.float("routed_scaling_factor", 1.0), **router,
            "load_balance_coef": 0.0, "z_loss_coef": 0.0,  # transformers' DeepSeek trains with neither router loss
        },
        **shared.dtypes(hf),
    }


def _expect_layer_types(hf: Fields) -> None:
    """V3.2's layer_types and mlp_layer_types, when given, must say what zoo builds: every layer
    indexed, the first first_k_dense_replace layers dense and the rest sparse."""
    layers, dense = hf.int("num_hidden_layers"), min(hf.int("first_k_dense_replace", 0), hf.int("num_hidden_layers"))
    for name, expected in (
        ("layer_types", ["indexed_attention"] * layers), ("mlp_layer_types", ["dense"] * dense + ["sparse"] * (layers - dense)),
    ):
        kinds = hf.strs(name)
        if kinds is not None and kinds != expected:
            raise HFConfigError(f"config.json: {name}={kinds} is not supported; zoo's DeepSeek-V3.2 import reads {expected}")


def _write(version: int):
    return lambda model: write(model, version)


def write(model: ModelConfig, version: int) -> dict:
    attention, moe = model.attention, model.moe
    if moe is None or moe.shared_ffn_dim % moe.expert_ffn_dim:
        raise HFConfigError("DeepSeek has experts in every layer after the dense ones, shared ones as wide as routed ones")
    rope = shared.rope_fields(model)
    if attention.softmax_scale is not None:  # as DeepSeek's YaRN mscale_all_dim: scale = mscale^2 / sqrt(dn + dr)
        factor = model.position.scaling_factor
        if model.position.rope_scaling != "yarn" or factor <= 1:
            raise HFConfigError("DeepSeek sets the softmax scale only through YaRN's mscale_all_dim")
        mscale = math.sqrt(attention.softmax_scale * math.sqrt(attention.qk_nope_head_dim + attention.qk_rope_head_dim))
        mscale_all_dim = (mscale - 1.0) / (0.1 * math.log(factor))
        rope["rope_parameters"] |= {"mscale": mscale_all_dim, "mscale_all_dim": mscale_all_dim}
        rope["rope_scaling"] |= {"mscale": mscale_all_dim, "mscale_all_dim": mscale_all_dim}
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.num_heads, "intermediate_size": model.ffn_dim,
        "hidden_act": shared.HF_ACTIVATION[model.ffn_activation], "rms_norm_eps": model.norm_eps,
        "tie_word_embeddings": model.tie_embeddings, "max_position_embeddings": model.max_seq_len,
        "kv_lora_rank": attention.kv_lora_rank, "q_lora_rank": attention.q_lora_rank,
        "qk_nope_head_dim": attention.qk_nope_head_dim, "qk_rope_head_dim": attention.qk_rope_head_dim,
        "v_head_dim": attention.v_head_dim,
        "n_routed_experts": moe.num_experts, "num_experts_per_tok": moe.top_k, "moe_intermediate_size": moe.expert_ffn_dim,
        "n_shared_experts": moe.shared_ffn_dim // moe.expert_ffn_dim, "first_k_dense_replace": moe.first_dense,
        "norm_topk_prob": moe.renormalize, "n_group": moe.num_groups, "topk_group": moe.top_groups,
        "routed_scaling_factor": moe.routed_scale, **rope, **VERSION_FIELDS[version](attention),
    }


VERSION_FIELDS = {  # each version's own fields, from the attention config
    2: lambda attention: {"topk_method": "greedy"},
    3: lambda attention: {"rope_interleave": True},
    32: lambda attention: {
        "index_n_heads": attention.index_heads, "index_head_dim": attention.index_head_dim, "index_topk": attention.index_top_k,
    },
}


def _query(hf: str, zoo, heads: int, nope: int, rope: np.ndarray) -> Rule:
    """q_proj / q_b_proj [H * (dn + dr), in] <-> [in, H, dn + dr] with the RoPE dims as halves
    (`rope`: their order, see rope_halves)."""
    order = np.concatenate([np.arange(nope), nope + rope])
    back = np.argsort(order)
    return Rule(
        hf, (zoo,),
        lambda w: (w.T.reshape(w.shape[1], heads, len(order))[..., order],),
        lambda w: w[..., back].reshape(w.shape[0], -1).T,
    )


def _latent(hf: str, zoo, rank: int, rope: np.ndarray) -> Rule:
    """kv_a_proj_with_mqa [rank + dr, D] <-> [D, rank + dr] with the shared RoPE key as halves."""
    order = np.concatenate([np.arange(rank), rank + rope])
    back = np.argsort(order)
    return Rule(hf, (zoo,), lambda w: (w.T[:, order],), lambda w: w[:, back].T)


def _layer(config: ModelConfig, spec: LayerSpec, interleaved: bool) -> list[Rule]:
    a = config.attention
    heads, p, attn = config.num_heads, "model.layers.{layer}.", ("attention",)
    rope = rope_halves(a.qk_rope_head_dim) if interleaved else np.arange(a.qk_rope_head_dim)
    rules = [
        same(p + "input_layernorm.weight", ("attention_norm", "scale")),
        same(p + "post_attention_layernorm.weight", ("ffn_norm", "scale")),
        _latent(p + "self_attn.kv_a_proj_with_mqa.weight", (*attn, "kv_down", "weight"), a.kv_lora_rank, rope),
        same(p + "self_attn.kv_a_layernorm.weight", (*attn, "kv_norm", "scale")),
        Rule(
            p + "self_attn.kv_b_proj.weight", ((*attn, "kv_up", "weight"),),
            lambda w: (w.T.reshape(a.kv_lora_rank, heads, -1),), lambda w: w.reshape(a.kv_lora_rank, -1).T,
        ),
        heads_out(p + "self_attn.o_proj.weight", (*attn, "o", "weight"), heads, a.v_head_dim),
    ]
    if a.q_lora_rank:
        rules += [
            transposed(p + "self_attn.q_a_proj.weight", (*attn, "q_down", "weight")),
            same(p + "self_attn.q_a_layernorm.weight", (*attn, "q_norm", "scale")),
            _query(p + "self_attn.q_b_proj.weight", (*attn, "q_up", "weight"), heads, a.qk_nope_head_dim, rope),
        ]
    else:
        rules.append(_query(p + "self_attn.q_proj.weight", (*attn, "q_up", "weight"), heads, a.qk_nope_head_dim, rope))
    if a.index_top_k is not None:  # V3.2's lightning indexer
        index = (*attn, "indexer")
        rules += [
            heads_in(p + "self_attn.indexer.wq_b.weight", (*index, "q", "weight"), a.index_heads, a.index_head_dim),
            transposed(p + "self_attn.indexer.wk.weight", (*index, "k", "weight")),
            same(p + "self_attn.indexer.k_norm.weight", (*index, "k_norm", "scale")),
            same(p + "self_attn.indexer.k_norm.bias", (*index, "k_norm", "bias")),
            transposed(p + "self_attn.indexer.weights_proj.weight", (*index, "head_weights", "weight")),
        ]
    mlp = p + "mlp."
    if not spec.moe:
        return rules + [transposed(mlp + f"{n}_proj.weight", ("ffn", n, "weight")) for n in ("gate", "up", "down")]
    rules += [
        transposed(mlp + "gate.weight", ("ffn", "router", "weight")),
        *(transposed(mlp + f"experts.{{expert}}.{n}_proj.weight", ("ffn", "experts", n)) for n in ("gate", "up", "down")),
    ]
    if config.moe.router == "sigmoid":  # V3's balancing bias
        rules.append(same(mlp + "gate.e_score_correction_bias", ("ffn", "router", "bias")))
    if config.moe.shared_ffn_dim:
        rules += [transposed(mlp + f"shared_experts.{n}_proj.weight", ("ffn", "shared", n, "weight")) for n in ("gate", "up", "down")]
    return rules


def _layout(version: int):
    return lambda config, hf=None: layout(config, hf, version)


def layout(config: ModelConfig, hf: Fields | None, version: int) -> Layout:
    """V3 checkpoints may keep their RoPE dims as halves (rope_interleave false); V2's, V3.2's
    and zoo's exports interleave them."""
    interleaved = version != 3 or hf is None or hf.bool("rope_interleave", True)
    top = [same("model.embed_tokens.weight", ("embedder", "embedding", "table")), same("model.norm.weight", ("tower", "final_norm", "scale"))]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    depth = config.num_layers

    def ignored(name: str) -> bool:  # the multi-token-prediction layers stored after the model's own
        parts = name.split(".")
        return name.startswith("model.layers.") and parts[2].isdigit() and int(parts[2]) >= depth or "rotary_emb" in name

    tower = LayerRules("tower", depth, lambda spec: _layer(config, spec, interleaved))
    return Layout(tuple(top), (tower,), ignored=ignored)


REMOTE_CODE = frozenset({"aux_loss_alpha", "seq_aux", "ep_size"})  # training and parallelism settings of DeepSeek's own code
INERT = REMOTE_CODE | {"head_dim", "qk_head_dim", "pretraining_tp", "output_router_logits"}  # transformers derives or ignores these
DEFAULTS = {  # transformers' values for fields a config may lack
    2: {"bos_token_id": 1, "eos_token_id": 2, "max_position_embeddings": 2048, "n_shared_experts": 2, "q_lora_rank": 1536},
    3: {
        "bos_token_id": 0, "eos_token_id": 1, "q_lora_rank": 1536, "n_shared_experts": 1, "first_k_dense_replace": 3,
        "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5,
    },
}
FAMILIES = (
    Family(
        "deepseek_v2", "DeepseekV2ForCausalLM", _read(2), _write(2), _layout(2), INERT, DEFAULTS[2],
        aliases={"num_experts": "n_routed_experts"},
    ),
    Family(
        "deepseek_v3", "DeepseekV3ForCausalLM", _read(3), _write(3), _layout(3), INERT | {"num_nextn_predict_layers"}, DEFAULTS[3],
        aliases={"num_local_experts": "n_routed_experts", "num_mtp_layers": "num_nextn_predict_layers"},
    ),
    Family(
        "deepseek_v32", "DeepseekV32ForCausalLM", _read(32), _write(32), _layout(32), INERT | {"num_nextn_predict_layers"},
        DEFAULTS[3] | {"max_position_embeddings": 163840, "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048},
        aliases={"num_local_experts": "n_routed_experts", "num_experts": "n_routed_experts"},
    ),
)
