"""Declarative configs: frozen dataclasses read from TOML, inherited, overridden and validated.

A config file names sections (`[model]`, `[model.attention]`, `[train]`, ...). It may
start with `base = "other"` to inherit everything it does not set. Overrides come from
code (`override(cfg, {"model.num_layers": 4})`) or the command line
(`--set model.num_layers=4`). Every value is checked on construction; a bad one raises
`ConfigError` naming the dotted key, the value and what is allowed.
"""

from zoo.config.files import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    find,
    from_dict,
    load,
    override,
    parse_override,
    read_toml,
    to_dict,
    to_toml,
)
from zoo.config.schema import (
    AttentionConfig,
    Config,
    DataConfig,
    GatedDeltaNetConfig,
    LoraConfig,
    Mamba2Config,
    MeshConfig,
    ModelConfig,
    MoEConfig,
    PositionConfig,
    TrainConfig,
)
from zoo.config.section import ConfigError, Names, Section

__all__ = [
    "AttentionConfig", "CONFIG_DIR", "Config", "ConfigError", "DataConfig", "DEFAULT_CONFIG", "GatedDeltaNetConfig", "LoraConfig", "Mamba2Config", "MeshConfig", "ModelConfig", "MoEConfig",
    "Names", "PositionConfig", "Section", "TrainConfig", "find", "from_dict", "load", "override", "parse_override",
    "read_toml", "to_dict", "to_toml",
]
