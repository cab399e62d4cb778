"""Every supported Hugging Face family, and choosing one for a config in either direction.

Importing goes by the checkpoint's `model_type`. Exporting tries each family in turn and
keeps the first whose written config reads back as the same architecture, so no
family needs rules about which zoo configs it can hold.
"""

from __future__ import annotations

import dataclasses

from zoo.config import ConfigError, ModelConfig
from zoo.config.files import to_dict
from zoo.hf import bert, bloom, deepseek, falcon, gpt2, llama, t5
from zoo.hf.family import Family
from zoo.hf.mapping import HFConfigError

FAMILIES: dict[str, Family] = {f.model_type: f for module in (llama, gpt2, falcon, bloom, deepseek, t5, bert) for f in module.FAMILIES}


def family_named(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise HFConfigError(f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def config_to_zoo(hf: dict) -> ModelConfig:
    """The ModelConfig of a Hugging Face config (the parsed config.json)."""
    settings = family_named(hf.get("model_type")).read(hf)
    try:
        return ModelConfig.from_dict(_without_none(settings))
    except ConfigError as error:
        raise HFConfigError(f"the Hugging Face config maps to an invalid zoo config: {error}") from None


def config_to_hf(model: ModelConfig) -> tuple[Family, dict]:
    """(the family, its config.json dict) that holds `model`'s architecture exactly."""
    for family in FAMILIES.values():
        try:
            hf = {"model_type": family.model_type, "architectures": [family.architecture], **family.write(model), "dtype": model.param_dtype}
            if _architecture(config_to_zoo(hf)) == _architecture(model):
                return family, hf
        except (HFConfigError, KeyError):
            continue
    raise HFConfigError(
        "no supported Hugging Face family has this architecture "
        f"({model.kind}, {model.attention.kind} attention, {model.position.kind} positions, block {model.block}); "
        f"families: {', '.join(sorted(FAMILIES))}"
    )


def _architecture(model: ModelConfig) -> dict:
    """The config without what does not change the weights or the function (dtypes, kernels,
    loop and memory settings, training coefficients)."""
    settings = to_dict(dataclasses.replace(model, dtype="float32", param_dtype="float32", scan_layers=True, remat="none"))
    settings["attention"].pop("kernel", None)
    for name in ("load_balance_coef", "z_loss_coef", "bias_update_rate"):
        (settings.get("moe") or {}).pop(name, None)
    return settings


def _without_none(settings: dict) -> dict:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in settings.items() if v is not None}
