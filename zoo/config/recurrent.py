"""The [model.mamba2] and [model.gated_deltanet] sections: the sizes of the recurrent mixers
that `attention.layer_pattern` places with its "mamba2" and "gated_deltanet" entries."""

from __future__ import annotations

import dataclasses
from typing import Literal

from zoo.config.section import ConfigError, Section, require_positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mamba2Config(Section):
    """A Mamba-2 mixer (zoo.layers.recurrent.Mamba2): num_heads x head_dim channels (HF's
    expand x hidden_size), a state of state_dim per head, B and C shared by groups of heads."""

    num_heads: int
    head_dim: int = 64
    state_dim: int = 128
    groups: int = 1
    conv_width: int = 4
    conv_bias: bool = True
    bias: bool = False  # biases on the input and output projections
    scan_chunk: int = 256  # tokens per block of the chunked scan (training, prefill)
    dt_init: tuple[float, ...] = (1e-3, 1e-1)  # the initial steps' range, drawn log-uniformly
    dt_limit: tuple[float, ...] = ()  # [low, high] clamps every step; empty: no clamp
    # how the gate z meets the scan's output y: rms_norm(y * silu(z)) (Mamba-2, Bamba),
    # rms_norm(y) * silu(z), or y * silu(z) with no norm (Falcon-H1's default)
    output_norm: Literal["gate_first", "norm_first", "none"] = "gate_first"

    def _validate(self):
        require_positive(self, "num_heads", "head_dim", "state_dim", "groups", "conv_width", "scan_chunk")
        if self.num_heads % self.groups:
            raise ConfigError("groups", f"{self.num_heads} heads do not split into {self.groups} equal groups")
        _check_range(self, "dt_init", required=True)
        _check_range(self, "dt_limit", required=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatedDeltaNetConfig(Section):
    """A Gated DeltaNet mixer (zoo.layers.recurrent.GatedDeltaNet): num_heads value heads of
    value_dim sharing num_key_heads query/key heads of key_dim (Qwen3-Next: 32 and 16 of 128)."""

    num_heads: int
    num_key_heads: int | None = None  # default num_heads
    key_dim: int = 128
    value_dim: int = 128
    conv_width: int = 4
    scan_chunk: int = 64  # tokens per block of the chunked delta rule (training, prefill)

    def _validate(self):
        require_positive(self, "num_heads", "num_key_heads", "key_dim", "value_dim", "conv_width", "scan_chunk")
        if self.num_key_heads is None:
            object.__setattr__(self, "num_key_heads", self.num_heads)
        if self.num_heads % self.num_key_heads:
            raise ConfigError(
                "num_key_heads", f"num_heads={self.num_heads} value heads do not share {self.num_key_heads} key heads evenly"
            )


def _check_range(section: Section, name: str, *, required: bool) -> None:
    values = getattr(section, name)
    if not values and not required:
        return
    if len(values) != 2 or not values[0] < values[1]:
        raise ConfigError(name, f"needs [low, high] with low < high, got {list(values)}")
    if values[0] < 0:
        raise ConfigError(name, f"steps are non-negative, got {list(values)}")
