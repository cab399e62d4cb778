"""Every supported Hugging Face family, and choosing one for a config in either direction.

Importing goes by the checkpoint's `model_type`, and refuses a config field that no part
of the import interprets (see fields.py). Exporting writes the family an import recorded
(rundir.SOURCE); for a run trained here it tries each family in turn and keeps the first
whose written config reads back as the same architecture, so no family needs rules about
which zoo configs it can hold.
"""

from __future__ import annotations

import dataclasses

from zoo.config import ConfigError, ModelConfig
from zoo.config.files import to_dict
from zoo.hf import bamba, bert, bloom, deepseek, falcon, falcon_h1, gpt2, gpt_neox, gpt_oss, llama, llama4, mamba2, qwen3_next, t5
from zoo.hf.family import Family, special_id_fields, special_ids
from zoo.hf.fields import INERT, Fields, json_kind
from zoo.hf.mapping import HFConfigError, Layout
from zoo.hf.unsupported import why_not

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for module in (llama, gpt2, gpt_neox, falcon, bloom, deepseek, t5, bert, gpt_oss, llama4, mamba2, bamba, qwen3_next, falcon_h1)
    for f in module.FAMILIES
}


def family_named(model_type) -> Family:
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        why = why_not(model_type) if isinstance(model_type, str) else None
        raise HFConfigError(
            f"model_type {model_type!r} is not supported{': ' + why if why else ''}; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def read_config(hf: dict, generation: dict | None = None) -> tuple[Family, ModelConfig, Layout]:
    """(the family, the ModelConfig, the weight Layout) of a Hugging Face config (the parsed
    config.json; `generation`: generation_config.json's, whose special token ids win)."""
    if not isinstance(hf, dict):
        raise HFConfigError(f"config.json must be a JSON object of fields, not {json_kind(hf)}")
    family = family_named(hf.get("model_type"))
    fields = Fields(hf, "config.json", family.model_type, INERT | family.inert, family.defaults, family.aliases)
    fields.value("model_type")
    if fields.has("quantization_config"):
        raise HFConfigError("quantized checkpoints (config.json has a quantization_config) are not supported; zoo reads float weights")
    fields.expect("pruned_heads", {}, "every head of every layer")
    generated = None if generation is None else Fields(generation, "generation_config.json", family.model_type)
    settings = family.read(fields)
    settings |= special_ids(fields, generated, settings["vocab_size"])
    try:
        model = ModelConfig.from_dict(_without_none(settings))
    except ConfigError as error:
        raise HFConfigError(f"the Hugging Face config maps to an invalid zoo config: {error}") from None
    layout = family.layout(model, fields)
    fields.refuse_unread()
    return family, model, layout


def config_to_zoo(hf: dict, generation: dict | None = None) -> ModelConfig:
    """The ModelConfig of a Hugging Face config (see read_config)."""
    return read_config(hf, generation)[1]


def config_to_hf(model: ModelConfig, model_type: str | None = None) -> tuple[Family, dict]:
    """(the family, its config.json dict) that holds `model`'s architecture exactly: the family
    `model_type` names (HFConfigError when it cannot), else the first that can."""
    if model_type is not None:
        family = family_named(model_type)
        try:
            return family, _written(family, model)
        except HFConfigError as error:
            raise HFConfigError(f"the Hugging Face family {model_type} cannot hold this model: {error}") from None
    for family in FAMILIES.values():
        try:
            return family, _written(family, model)
        except HFConfigError:
            continue
    raise HFConfigError(
        "no supported Hugging Face family has this architecture "
        f"({model.kind}, {model.attention.kind} attention, {model.position.kind} positions, block {model.block}); "
        f"families: {', '.join(sorted(FAMILIES))}"
    )


def _written(family: Family, model: ModelConfig) -> dict:
    """`family`'s config.json for `model`; HFConfigError when it would read back as another architecture."""
    hf = {"model_type": family.model_type, "architectures": [family.architecture], **family.write(model), "dtype": model.param_dtype}
    hf |= special_id_fields(model)
    if _architecture(config_to_zoo(hf)) != _architecture(model):
        raise HFConfigError("its config.json would read back as another architecture")
    return hf


def _architecture(model: ModelConfig) -> dict:
    """The config without what does not change the weights or the function (dtypes, kernels,
    loop and memory settings, training coefficients, special token ids, what dynamic RoPE measures)."""
    settings = to_dict(dataclasses.replace(model, dtype="float32", param_dtype="float32", scan_layers=True, remat="none"))
    settings["attention"].pop("kernel", None)
    for name in ("bos_id", "eos_ids"):
        settings.pop(name, None)
    settings["position"].pop("dynamic_length", None)  # each row's length or the batch's: the same for one row
    if settings["position"]["kind"] != "learned":  # only a learned table has max_seq_len rows
        settings.pop("max_seq_len")
    if not any(mixer.startswith("attention") for mixer in model.attention.layer_mixers()):  # no attention layer: its sizes and options size nothing
        settings["attention"] = {"layer_pattern": settings["attention"]["layer_pattern"]}
        for name in ("num_heads", "num_kv_heads", "head_dim"):
            settings.pop(name)
        if model.position.kind in ("rope", "none"):  # RoPE rotates only attention's queries and keys
            settings.pop("position")
    for name in ("load_balance_coef", "z_loss_coef", "bias_update_rate"):
        (settings.get("moe") or {}).pop(name, None)
    for name in ("dt_init", "scan_chunk"):  # Mamba-2's initial steps and its scan's block size
        (settings.get("mamba2") or {}).pop(name, None)
    return settings


def _without_none(settings: dict) -> dict:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in settings.items() if v is not None}
