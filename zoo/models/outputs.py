"""What models return: small typed pytrees, the same fields for every model kind."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from zoo.layers.moe import MoEStats


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Features:
    """A tower's (and a model's `features`) result: hidden [B, T, D] after the final norm, the
    updated cache (None without one), and the MoEStats of each MoE block, each stacked over
    the layers that repeat it (Tower.moe_blocks gives their order; () without MoE layers)."""

    hidden: jax.Array
    cache: Any
    moe: tuple[MoEStats, ...]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Output:
    """A model's forward: logits [B, T, V], the updated cache (None without one) and the MoEStats
    as in Features (an encoder-decoder's: the encoder's, then the decoder's)."""

    logits: jax.Array
    cache: Any
    moe: tuple[MoEStats, ...]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EncoderDecoderCache:
    """An encoder-decoder's cache: the decoder's self-attention caches, and `memory`, the
    encoder output's keys and values for every decoder layer (None until a call that passes
    encoder_tokens fills it)."""

    decoder: tuple
    memory: tuple | None = None
