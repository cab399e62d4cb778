"""Configs from TOML files: lookup by name, `base` inheritance, dotted overrides, writing back."""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, Mapping, Sequence

from zoo.config.schema import Config
from zoo.config.section import ConfigError, Section, did_you_mean

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = "tiny"


def find(name: str | Path) -> Path:
    """The TOML file for `name`: a path, or a config name looked up in ./configs and zoo's configs/."""
    path = Path(name)
    names = [path] if path.suffix == ".toml" else [path.with_name(path.name + ".toml"), path]
    directories = [Path()] if path.is_absolute() else [Path(), Path("configs"), CONFIG_DIR]
    for directory in directories:
        for candidate in names:
            if (directory / candidate).is_file():
                return directory / candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    raise ConfigError("", f"no config file {str(name)!r}{did_you_mean(str(name), known)}; known configs: {', '.join(known)}")


def read_toml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's tables merged over those of its `base` chain."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError("base", f"inheritance cycle: {' -> '.join(p.name for p in (*_seen, path))}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError("", f"{path} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError("", f"{path} cannot be read: {error.strerror}") from None
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError("base", f"expected a config name or path, got {base!r}")
    try:
        base_path = find(path.parent / base)  # beside the including file first
    except ConfigError:
        base_path = find(base)
    return _merge(read_toml(base_path, (*_seen, path)), data)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """`"model.num_layers=4"` -> `("model.num_layers", 4)`; values are TOML, bare words are strings."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("", f"override {text!r} is not of the form section.key=value")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets data[a][b][c] = value for dotted = "a.b.c", creating tables as needed."""
    parts = dotted.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"{'.'.join(parts[: depth + 1])} is a value, not a table")
    node[parts[-1]] = value


def from_dict(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Config:
    """A validated Config from nested dicts, with dotted-key overrides applied first."""
    data = copy.deepcopy(dict(data))
    for key, value in (overrides or {}).items():
        _set(data, key, value)
    return Config.from_dict(data)


def load(name: str | Path = DEFAULT_CONFIG, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """Reads a config by name or path, applying `key=value` strings or a {dotted key: value} map."""
    if not isinstance(overrides, Mapping):
        overrides = dict(parse_override(text) for text in overrides)
    return from_dict(read_toml(find(name)), overrides)


def to_dict(config: Section) -> dict[str, Any]:
    """The config as nested dicts, unset optional values left out (TOML has no null)."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, Section):
            out[field.name] = to_dict(value)
        elif value is not None:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def override(config: Config, overrides: Mapping[str, Any]) -> Config:
    """A copy of `config` with {dotted key: value} changes, validated again."""
    return from_dict(to_dict(config), overrides)


def to_toml(config: Section) -> str:
    """TOML text that `load` reads back to an equal config."""
    lines: list[str] = []

    def table(prefix: str, data: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in data.items():
            if isinstance(v, Mapping):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", to_dict(config))
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 'inf' and 'nan' are TOML too
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
