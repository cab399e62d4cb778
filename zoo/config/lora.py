"""The [train.lora] section: fine-tuning through low-rank adapters while the base weights stay frozen."""

from __future__ import annotations

import dataclasses
from typing import Literal

from zoo.config.section import ConfigError, Section, require_positive

NEEDS_BASE = "adapts the weights of a trained run: set train.init_from to its directory (e.g. --set train.init_from=runs/tiny)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraConfig(Section):
    """Adapters of `rank` on the weights matching `targets` (see zoo/layers/lora.py), scaled by
    alpha / rank; only they train. A LoRA run starts from `train.init_from`, the base run,
    and its checkpoints hold the adapters alone."""

    rank: int
    alpha: float | None = None  # None: the rank (a scale of 1, as PEFT's defaults give)
    dropout: float = 0.0  # dropout on the input of linear layers' adapters, while training
    # globs over weight names, each matching a name or its end after a dot: "attention.q",
    # "ffn.*" (every feed-forward matrix, experts' too), "embedding"
    targets: tuple[str, ...] = ("attention.*", "ffn.*")
    # how the frozen base is held while the adapters train: as its run saved it, in bfloat16, or
    # with every linear and expert weight but the output projection quantized (QLoRA: int8 or fp8 per
    # output channel, NF4 in blocks of 64; zoo/layers/quantized.py)
    base_weights: Literal["as_saved", "bfloat16", "int8", "fp8", "nf4"] = "as_saved"

    def _validate(self):
        require_positive(self, "rank", "alpha")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"is the share of inputs dropped: it must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ConfigError("targets", "names no weight; give globs such as [\"attention.*\", \"ffn.*\"]")

    @property
    def scale_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)
