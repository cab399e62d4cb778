"""gpt-oss (OpenAI 2025): the Llama-shaped layout with attention sinks, q/k/v/o biases, sliding
and full layers alternating, YaRN, and experts with biases and a clamped SwiGLU behind a
router with a bias (its softmax over the chosen experts' logits alone is the softmax router
renormalised over them).

Its checkpoints store each layer's experts fused: gate_up_proj [E, D, 2F] with the gate and
up columns interleaved (g0 u0 g1 u1 ...), gate_up_proj_bias [E, 2F], down_proj [E, F, D] and
down_proj_bias [E, D]. OpenAI's own repositories hold MXFP4-quantized experts, which the
import refuses (quantization_config); a bfloat16 or float32 save of them is read.
"""

from __future__ import annotations

import numpy as np

from zoo.config import ModelConfig
from zoo.hf import decoder_layout, llama
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import Path, Rule, same, transposed

VARIANT = llama.Variant(
    "gpt_oss", "GptOssForCausalLM",
    {"attention": {"sinks": True}, "ffn_activation": "silu"},  # its experts do not read hidden_act
    biases=("attention_bias",), windows="layer_types", experts="fused", expert_rules=lambda p: experts(p),
    defaults={  # transformers' GptOssConfig
        "attention_bias": True, "head_dim": 64, "num_key_value_heads": 8, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5, "sliding_window": 128, "num_experts_per_tok": 4, "router_aux_loss_coef": 0.001,
        "swiglu_limit": 7.0, "swiglu_alpha": 1.702, "rope_theta": 150000.0,
        "rope_parameters": {
            "rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
            "original_max_position_embeddings": 4096,
        },
    },
    # training only; and two fields of OpenAI's config.json that transformers keeps but never reads
    inert=frozenset({"output_router_logits", "experts_per_token", "initial_context_length"}),
)


def read(hf: Fields) -> dict:
    model = llama._read(VARIANT, hf)
    model["moe"] |= {
        "router_bias": True, "expert_bias": True, "swiglu_limit": hf.float("swiglu_limit"), "swiglu_alpha": hf.float("swiglu_alpha"),
    }
    return model


def write(model: ModelConfig) -> dict:
    fields = llama._write(VARIANT, model)
    return fields | {"swiglu_limit": model.moe.swiglu_limit, "swiglu_alpha": model.moe.swiglu_alpha}


def interleaved(hf: str, zoo: tuple[Path, Path]) -> Rule:
    """Two projections stored with their last dims interleaved (a0 b0 a1 b1 ...) <-> the two."""
    return Rule(hf, zoo, lambda w: (w[..., 0::2], w[..., 1::2]), lambda a, b: np.stack([a, b], axis=-1).reshape(*a.shape[:-1], -1))


def experts(p: str) -> list[Rule]:
    """The router and fused experts of layer prefix `p`."""
    mlp, router, experts = p + "mlp.", ("ffn", "router"), ("ffn", "experts")
    return [
        transposed(mlp + "router.weight", (*router, "weight")),
        same(mlp + "router.bias", (*router, "logit_bias")),
        interleaved(mlp + "experts.gate_up_proj", ((*experts, "gate"), (*experts, "up"))),
        interleaved(mlp + "experts.gate_up_proj_bias", ((*experts, "gate_bias"), (*experts, "up_bias"))),
        same(mlp + "experts.down_proj", (*experts, "down")),
        same(mlp + "experts.down_proj_bias", (*experts, "down_bias")),
    ]


FAMILIES = (Family(VARIANT.model_type, VARIANT.architecture, read, write, decoder_layout.layout(VARIANT), VARIANT.inert, VARIANT.defaults),)
