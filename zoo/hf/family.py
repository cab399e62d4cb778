"""What each Hugging Face family provides, and the config fields families share.

A Family reads a Hugging Face config into zoo model settings, writes a zoo config back
as Hugging Face fields, and gives the weight Layout for a config. Fields that mean the
same in every family (RoPE parameters, activations, dtypes) are read here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from zoo.config import ModelConfig
from zoo.hf.mapping import HFConfigError, Layout


@dataclasses.dataclass(frozen=True)
class Family:
    model_type: str
    architecture: str  # the transformers class its checkpoints name
    read: Callable[[dict], dict]  # Hugging Face config -> zoo model settings
    write: Callable[[ModelConfig], dict]  # zoo config -> Hugging Face config fields
    layout: Callable[[ModelConfig, dict | None], Layout]  # with the checkpoint's config on import, None on export


ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"}
HF_ACTIVATION = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
ROPE_TYPES = {"default": "none", "linear": "linear", "dynamic": "dynamic_ntk", "yarn": "yarn", "llama3": "llama3"}
ROPE_FIELDS = {  # Hugging Face rope parameter -> zoo position field
    "factor": "scaling_factor",
    "original_max_position_embeddings": "original_max_position",
    "low_freq_factor": "low_freq_factor",
    "high_freq_factor": "high_freq_factor",
    "beta_fast": "beta_fast",
    "beta_slow": "beta_slow",
    "attention_factor": "attention_factor",
}


def activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise HFConfigError(f"activation {name!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dtypes(hf: dict) -> dict:
    """Compute and storage dtype of the checkpoint (float32 when it does not say)."""
    dtype = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
    dtype = dtype if dtype in ("float32", "bfloat16", "float16") else "float32"
    return {"dtype": dtype, "param_dtype": dtype}


def rope(hf: dict) -> dict:
    """[model.position] from rope_parameters (transformers 5) or rope_theta + rope_scaling."""
    parameters = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = parameters.pop("rope_theta", hf.get("rope_theta", 10_000.0))
    rope_type = parameters.pop("rope_type", parameters.pop("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise HFConfigError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    position = {"kind": "rope", "rope_theta": float(theta), "rope_scaling": ROPE_TYPES[rope_type]}
    if rope_type != "default":
        position |= {ROPE_FIELDS[k]: v for k, v in parameters.items() if k in ROPE_FIELDS and v is not None}
    if rope_type == "yarn" and parameters.get("attention_factor") is None and parameters.get("mscale") and parameters.get("mscale_all_dim"):
        factor = parameters["factor"]  # transformers' YaRN: the ratio of the two mscales scales cos and sin
        position["attention_factor"] = yarn_mscale(factor, parameters["mscale"]) / yarn_mscale(factor, parameters["mscale_all_dim"])
    if hf.get("partial_rotary_factor"):
        position["rotary_fraction"] = hf["partial_rotary_factor"]
    return position


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature factor 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_fields(model: ModelConfig) -> dict:
    """rope_parameters (and the older rope_theta / rope_scaling) for a RoPE model."""
    position = model.position
    parameters: dict[str, Any] = {
        "rope_theta": position.rope_theta,
        "rope_type": next(k for k, v in ROPE_TYPES.items() if v == position.rope_scaling),
    }
    if position.rope_scaling != "none":
        parameters |= {k: getattr(position, v) for k, v in ROPE_FIELDS.items() if getattr(position, v) is not None}
    scaling = None if position.rope_scaling == "none" else {k: v for k, v in parameters.items() if k != "rope_theta"}
    fields = {"rope_parameters": parameters, "rope_theta": position.rope_theta, "rope_scaling": scaling}
    if position.rotary_fraction != 1.0:
        fields["partial_rotary_factor"] = position.rotary_fraction
    return fields
