"""The base of config sections: typed frozen dataclasses checked on construction."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import types
import typing
from typing import Annotated, Any, Literal, Mapping, Sequence


INT_LIMIT = 2**31 - 1  # every integer setting must fit int32: jax counts steps and indexes arrays with it


class ConfigError(ValueError):
    """A config value that cannot be used; `key` is its dotted path, e.g. `model.num_heads`."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)

    def under(self, prefix: str) -> ConfigError:
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.message)


@dataclasses.dataclass(frozen=True)
class Names:
    """Marks a string field whose value is a name in a table the code already keeps (a
    Registry, or a dict keyed by name), so that table is the one list of what is allowed:

        norm: Annotated[str, Names("zoo.layers.norms:NORMS")] = "rms"

    `table` is "module:attribute", imported only when a value is checked, so importing
    zoo.config pulls in no layers (and no cycle: zoo.models imports zoo.config). `also`
    are names the config adds to the table's, e.g. rope_scaling's "none".
    """

    table: str
    also: tuple[str, ...] = ()

    def allowed(self) -> tuple[str, ...]:
        """The names the table holds now (a Registry's sorted, a dict's in order), after `also`."""
        module, _, attribute = self.table.partition(":")
        try:
            table = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            raise TypeError(f"config names are to come from {self.table}, which cannot be found: {error}") from error
        return (*self.also, *table)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
    """Base of every config section: checks field types on construction, then `_validate`."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self), include_extras=True)
        for field in dataclasses.fields(self):
            value = _coerce(getattr(self, field.name), hints[field.name], field.name)
            object.__setattr__(self, field.name, value)
        self._validate()

    def _validate(self) -> None:
        """Checks that involve more than one field's type; raise ConfigError(field, ...)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Section:
        hints = typing.get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in data.items():
            if key not in names:
                raise ConfigError(key, f"unknown key{did_you_mean(key, names)}; allowed: {', '.join(names)}")
            section = _section_type(hints[key])
            if section is not None and isinstance(value, Mapping):
                try:
                    value = section.from_dict(value)
                except ConfigError as error:
                    raise error.under(key) from None
            kwargs[key] = value
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and _is_required(f)]
        if missing:
            raise ConfigError(missing[0], "is required but not set")
        return cls(**kwargs)


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def did_you_mean(key: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section_type(hint: Any) -> type[Section] | None:
    """The Section class a field holds, also when it is optional (`Section | None`)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        sections = [h for h in typing.get_args(hint) if _section_type(h) is not None]
        return sections[0] if sections else None
    return hint if isinstance(hint, type) and issubclass(hint, Section) else None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Returns `value` as type `hint` (int -> float, list -> tuple), or raises ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() == "none" and type(None) in args and not any(map(_is_text, args)):
            return None  # lets `--set key=none` clear an optional value
        inner = [a for a in args if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return _coerce(value, candidate, key)
            except ConfigError as error:
                errors.append(error.message)
        raise ConfigError(key, " or ".join(errors) + (" (or unset)" if type(None) in args else ""))
    if origin is Literal:
        return _one_of(value, args, key)
    if origin is Annotated and isinstance(args[1], Names):
        return _one_of(value, args[1].allowed(), key)
    if origin is tuple:  # tuple[X, ...]: a TOML list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return tuple(_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
    if _section_type(hint) is not None:
        if isinstance(value, hint):
            return value
        raise ConfigError(key, f"expected a [{key}] table, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if abs(value) > INT_LIMIT:
            raise ConfigError(key, f"{value} is out of range; integer settings must lie within +-{INT_LIMIT:,} (int32)")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    raise TypeError(f"config field {key} has unsupported type {hint!r}")


def _one_of(value: Any, allowed: Sequence[Any], key: str) -> Any:
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ConfigError(key, f"{value!r} is not allowed{did_you_mean(str(value), [str(a) for a in allowed])}; allowed: {listed}")
    return value


def _is_text(hint: Any) -> bool:
    """Whether the type takes strings as they are (a str, or a table's name), so "none" is not read as unset."""
    return hint is str or (typing.get_origin(hint) is Annotated and isinstance(typing.get_args(hint)[1], Names))


def require_positive(section: Section, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is not None and value <= 0:
            raise ConfigError(name, f"must be positive, got {value!r}")


def require_at_most(section: Section, limit: int, *names: str, why: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is not None and value > limit:
            raise ConfigError(name, f"{value:,} is more than {limit:,}, {why}")


def require_non_negative(section: Section, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is not None and value < 0:
            raise ConfigError(name, f"must be >= 0, got {value!r}")
