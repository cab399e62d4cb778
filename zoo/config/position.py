"""The [model.position] section: how token positions reach the model, RoPE and its scalings."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from zoo.config.section import ConfigError, Names, Section, require_positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class PositionConfig(Section):
    """How token positions reach the model (see zoo/layers/positions.py and rope.py)."""

    kind: Annotated[str, Names("zoo.models.wiring:POSITIONS")] = "rope"
    rope_theta: float = 10_000.0
    rotary_fraction: float = 1.0  # share of each head's dims that RoPE rotates (GPT-NeoX, Phi)
    rope_scaling: Annotated[str, Names("zoo.layers.rope:ROPE_SCALINGS", also=("none",))] = "none"
    scaling_factor: float = 1.0  # how many times the original context the scaling stretches to
    original_max_position: int | None = None  # the context length the model was trained with
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn: default 0.1 ln(scaling_factor) + 1; longrope: sqrt(1 + ln(s) / ln(L0))
    yarn_truncate: bool = True  # yarn: round the ramp's ends to whole dims (false in gpt-oss)
    # dynamic_ntk, longrope: the length the scaling adapts to: each sequence's own (packed documents
    # each their own), or the longest in the batch, as transformers computes it
    dynamic_length: Literal["sequence", "batch"] = "sequence"
    short_factor: tuple[float, ...] = ()  # longrope: one per rotated pair, up to original_max_position
    long_factor: tuple[float, ...] = ()  # longrope: one per rotated pair, beyond it
    relative_buckets: int = 32  # relative (T5)
    relative_max_distance: int = 128  # relative (T5)
    # The RoPE of the local (windowed) layers of attention.layer_pattern when it differs from the
    # global layers' (Gemma 3: theta 10,000 unscaled, the global ones 1,000,000 with linear scaling
    # 8): a [model.position.local] table of RoPE fields, read in full: a field it leaves out takes
    # its default, not the global layers' value. Unset: every layer rotates alike.
    local: PositionConfig | None = None

    def _validate(self):
        require_positive(
            self, "rope_theta", "original_max_position", "low_freq_factor", "high_freq_factor",
            "beta_fast", "beta_slow", "attention_factor", "relative_buckets", "relative_max_distance",
        )
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ConfigError("rotary_fraction", f"must be in (0, 1], got {self.rotary_fraction}")
        if self.local is not None:
            if self.kind != "rope":
                raise ConfigError("local", f"sets the RoPE of local layers, but kind is {self.kind!r}; use kind = \"rope\"")
            if self.local.kind != "rope":
                raise ConfigError("local.kind", f"local layers' own positions are RoPE settings; got {self.local.kind!r}")
            if self.local.local is not None:
                raise ConfigError("local.local", "is the local layers' RoPE already; it has no local section of its own")
        if self.rope_scaling == "none":
            return
        if self.kind != "rope":
            raise ConfigError("rope_scaling", f"{self.rope_scaling!r} scales RoPE, but kind is {self.kind!r}")
        if self.scaling_factor < 1.0:
            raise ConfigError("scaling_factor", f"must be >= 1 (it stretches the context), got {self.scaling_factor}")
        if self.rope_scaling in ("dynamic_ntk", "yarn", "llama3", "longrope") and self.original_max_position is None:
            raise ConfigError(
                "original_max_position", f"{self.rope_scaling} scaling needs the context length the model was trained with"
            )
        if self.rope_scaling == "longrope":
            if not self.short_factor or len(self.short_factor) != len(self.long_factor):
                raise ConfigError(
                    "short_factor", "longrope needs short_factor and long_factor, one value per rotated pair of dims each"
                )
            if min(self.short_factor + self.long_factor) <= 0:
                raise ConfigError("long_factor", "longrope's factors divide the frequencies: each must be > 0")
        if self.rope_scaling == "yarn" and self.beta_fast <= self.beta_slow:
            raise ConfigError("beta_fast", f"must exceed beta_slow={self.beta_slow}, got {self.beta_fast}")
        if self.rope_scaling == "llama3" and self.high_freq_factor < self.low_freq_factor:
            raise ConfigError(
                "high_freq_factor", f"must be at least low_freq_factor={self.low_freq_factor}, got {self.high_freq_factor}"
            )
