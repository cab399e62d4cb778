"""What each Hugging Face family provides, and the config fields families share.

A Family reads a Hugging Face config into zoo model settings, writes a zoo config back
as Hugging Face fields, and gives the weight Layout for a config. Fields that mean the
same in every family (RoPE parameters, activations, dtypes, special token ids) are read here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from zoo.config import ModelConfig, PositionConfig
from zoo.hf.fields import REQUIRED, Fields
from zoo.hf.mapping import HFConfigError, Layout


@dataclasses.dataclass(frozen=True)
class Family:
    """inert: the family's config fields known not to change the forward pass (beyond
    fields.INERT); defaults: transformers' values of fields a config may lack (see Fields);
    aliases: other names transformers accepts for a field -> the one read."""

    model_type: str
    architecture: str  # the transformers class its checkpoints name
    read: Callable[[Fields], dict]  # Hugging Face config -> zoo model settings
    write: Callable[[ModelConfig], dict]  # zoo config -> Hugging Face config fields
    layout: Callable[[ModelConfig, Fields | None], Layout]  # with the checkpoint's config on import, None on export
    inert: frozenset[str] = frozenset()
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)


ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"}
HF_ACTIVATION = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
ROPE_TYPES = {  # Hugging Face rope_type -> (zoo rope_scaling, {its parameters: zoo position fields})
    "default": ("none", {}),
    "linear": ("linear", {"factor": "scaling_factor"}),
    "dynamic": ("dynamic_ntk", {"factor": "scaling_factor"}),
    "yarn": ("yarn", {
        "factor": "scaling_factor", "original_max_position_embeddings": "original_max_position", "beta_fast": "beta_fast",
        "beta_slow": "beta_slow", "attention_factor": "attention_factor", "truncate": "yarn_truncate",
    }),
    "llama3": ("llama3", {
        "factor": "scaling_factor", "original_max_position_embeddings": "original_max_position",
        "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor",
    }),
    "longrope": ("longrope", {
        "factor": "scaling_factor", "original_max_position_embeddings": "original_max_position",
        "short_factor": "short_factor", "long_factor": "long_factor", "attention_factor": "attention_factor",
    }),
}
SCALED_FROM_ORIGINAL = ("yarn", "llama3", "longrope")  # rope types that read the length the model was trained with


def activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise HFConfigError(f"activation {name!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dtypes(hf: Fields) -> dict:
    """Compute and storage dtype of the checkpoint (float32 when it does not say)."""
    dtype = hf.str("dtype", None) or hf.str("torch_dtype", None) or "float32"
    dtype = dtype if dtype in ("float32", "bfloat16", "float16") else "float32"
    return {"dtype": dtype, "param_dtype": dtype}


def special_ids(hf: Fields, generation: Fields | None, vocab_size: int) -> dict:
    """bos_id and eos_ids from config.json, or from generation_config.json where it sets them
    (transformers' generate stops at the generation config's eos ids). Ids outside the
    vocabulary, which no token can be, are dropped (small test models keep GPT-2's 50256)."""
    bos, eos = hf.int("bos_token_id", None), hf.ids("eos_token_id")
    if generation is not None:
        bos, eos = generation.int("bos_token_id", bos), generation.ids("eos_token_id") or eos
    inside = lambda i: i is not None and 0 <= i < vocab_size
    return {"bos_id": bos if inside(bos) else None, "eos_ids": [i for i in eos if inside(i)]}


def special_id_fields(model: ModelConfig) -> dict:
    """bos_token_id and eos_token_id (one id, or a list of several) for config.json, and no
    padding id (zoo keeps none; a family's default one could lie outside a small vocabulary)."""
    eos = list(model.eos_ids)
    return {"bos_token_id": model.bos_id, "eos_token_id": eos[0] if len(eos) == 1 else eos or None, "pad_token_id": None}


def rope_parameters(hf: Fields) -> Fields:
    """The RoPE parameters as transformers takes them: rope_scaling (older configs) before
    rope_parameters (transformers 5), else none."""
    name = "rope_scaling" if hf.value("rope_scaling") else "rope_parameters"
    hf.value("rope_scaling" if name == "rope_parameters" else "rope_parameters")  # the other one goes unused, as there
    return hf.section(name) or Fields({}, f"{hf.where} rope_parameters", hf.family)


def rope(
    hf: Fields, max_position: int, parameters: Fields | None = None, theta_field: str = "rope_theta", *, partial: bool = False
) -> dict:
    """[model.position] from the RoPE parameters (`max_position`: max_position_embeddings): the
    config's (rope_parameters), or `parameters` (one layer type's, Gemma 3), whose theta falls
    back to the config's `theta_field`; `partial`: the family rotates the first
    partial_rotary_factor of each head, as zoo does. Parameters the rope_type does not take
    stay unread, so the config is refused."""
    parameters = rope_parameters(hf) if parameters is None else parameters
    rope_type = parameters.str("rope_type", parameters.str("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise HFConfigError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    theta = parameters.float("rope_theta", hf.float(theta_field, 10_000.0))
    scaling, names = ROPE_TYPES[rope_type]
    position: dict[str, Any] = {"kind": "rope", "rope_theta": theta, "rope_scaling": scaling}
    if partial:
        top = hf.float("partial_rotary_factor", 1.0)  # older configs'; rope_parameters' wins, as in transformers
        position["rotary_fraction"] = parameters.float("partial_rotary_factor", top)
    else:
        whole = f"zoo's {hf.family} import rotates whole heads, as transformers' does"
        parameters.expect("partial_rotary_factor", 1.0, whole)
        hf.expect("partial_rotary_factor", 1.0, whole)
    for theirs, ours in names.items():
        read = {
            "original_max_position_embeddings": parameters.int, "truncate": parameters.bool,
            "short_factor": parameters.floats, "long_factor": parameters.floats,
        }.get(theirs, parameters.float)
        required = theirs in ("short_factor", "long_factor") or (theirs == "factor" and rope_type in ("linear", "dynamic", "llama3"))
        position[ours] = read(theirs, REQUIRED if required else None)
    if rope_type in SCALED_FROM_ORIGINAL:  # a top-level value wins, as in transformers; else the trained length
        original = hf.int("original_max_position_embeddings", None) or position["original_max_position"] or max_position
        position["original_max_position"] = original
    if rope_type == "dynamic":  # transformers grows the base past max_position_embeddings (by the batch's
        # longest row; zoo by each row's own, so a row does not depend on the others: dynamic_length)
        position |= {"original_max_position": max_position}
    if rope_type in ("yarn", "longrope") and position["scaling_factor"] is None:
        # as transformers: the ratio of the two lengths (LongRoPE's sets only its attention factor: at most 1 -> 1)
        position["scaling_factor"] = max(max_position / position["original_max_position"], 1.0)
    if rope_type == "yarn":
        mscale, mscale_all_dim = parameters.float("mscale", None), parameters.float("mscale_all_dim", None)
        if position["attention_factor"] is None and mscale and mscale_all_dim:  # their ratio scales cos and sin
            factor = position["scaling_factor"]
            position["attention_factor"] = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    return position


def moe_layers(sparse: list[int], num_layers: int, named_by: str) -> dict:
    """moe.first_dense, every and offset that put experts in exactly the layers `sparse` of
    `num_layers`, in whole periods of `every` layers after the first dense ones (zoo stacks
    the layers by period). HFConfigError, naming the fields `named_by`, where none do."""
    if sparse:
        every = sparse[1] - sparse[0] if len(sparse) > 1 else num_layers - sparse[0]
        offset = sparse[0] % every
        # periods starting at the first MoE layer, else at a whole period before it
        for first, offset in ((sparse[0], 0), (sparse[0] - offset, offset)):
            if sparse == list(range(sparse[0], num_layers, every)) and (num_layers - first) % every == 0:
                return {"first_dense": first, "every": every, "offset": offset}
    raise HFConfigError(
        f"config.json: {named_by} put experts in layers {sparse} of {num_layers}; zoo's moe has them in at least one "
        "layer: layer `offset` of each period of `every` layers after the `first_dense` ones, in whole periods"
    )


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature factor 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_fields(model: ModelConfig, *, partial: bool = False) -> dict:
    """rope_parameters (and the older rope_theta / rope_scaling) for a RoPE model (`partial`:
    the family can rotate part of each head, as rope's)."""
    position = model.position
    if position.local is not None:
        raise HFConfigError("these families rotate every layer alike; position.local gives local layers a RoPE of their own")
    parameters = rope_parameter_fields(position, partial=partial)
    rope_type = parameters["rope_type"]
    scaling = None if rope_type == "default" else {k: v for k, v in parameters.items() if k != "rope_theta"}
    fields = {"rope_parameters": parameters, "rope_theta": position.rope_theta, "rope_scaling": scaling}
    if rope_type in SCALED_FROM_ORIGINAL:  # where transformers looks first (Phi-3 has a default of its own there)
        fields["original_max_position_embeddings"] = position.original_max_position
    return fields


def rope_parameter_fields(position: PositionConfig, *, partial: bool = False) -> dict:
    """One set of rope_parameters (rope_theta, rope_type and its parameters) for `position`'s
    RoPE (`partial`: with its partial_rotary_factor)."""
    if position.rotary_fraction != 1.0 and not partial:
        raise HFConfigError("these families rotate whole heads with RoPE")
    rope_type = next((k for k, (ours, _) in ROPE_TYPES.items() if ours == position.rope_scaling), None)
    if rope_type is None:
        raise HFConfigError(f"rope_scaling {position.rope_scaling!r} has no Hugging Face rope_type")
    parameters: dict[str, Any] = {"rope_theta": position.rope_theta, "rope_type": rope_type}
    for theirs, ours in ROPE_TYPES[rope_type][1].items():
        value = getattr(position, ours)
        if value is not None:
            parameters[theirs] = list(value) if isinstance(value, tuple) else value  # JSON's lists
    return parameters | ({"partial_rotary_factor": position.rotary_fraction} if partial else {})
