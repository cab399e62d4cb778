"""Rotary position embedding (RoPE, Su et al. 2021) and its context-extension scalings.

Each scaling changes only the inverse frequencies (and YaRN also scales the rotated
values by an attention factor):

    linear       position interpolation: every frequency divided by the factor (Chen et al. 2023)
    ntk          NTK-aware: base theta * factor^(R / (R - 2)) (bloc97, 2023)
    dynamic_ntk  NTK-aware with the factor grown from the current length L:
                 theta * (factor * L / L0 - (factor - 1))^(R / (R - 2)) once L > L0. L is each
                 sequence's own length (a packed document's, a cached row's current position
                 + 1), or with dynamic_length="batch" the batch's longest, as transformers
                 computes it. As in Hugging Face, cached keys keep the rotation of the step
                 that made them, so past L0 cached decoding differs from a full forward pass.
    yarn         per-frequency ramp between interpolation and extrapolation set by
                 beta_fast / beta_slow (its ends rounded out to whole dims when `truncate`),
                 and attention factor 0.1 ln(factor) + 1 (Peng et al. 2023)
    llama3       low frequencies divided by the factor, high ones kept, a smooth blend between
                 (Meta's Llama 3.1)
    longrope     each frequency divided by its own searched factor: short_factor while the
                 current length L <= L0, long_factor beyond (per sequence, or per batch as
                 with dynamic_ntk), and an attention factor sqrt(1 + ln(factor) / ln(L0))
                 (Ding et al. 2024; Phi-3, Phi-4)

L0 is the original context length the model was trained with.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from zoo.registry import Registry


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """A context-extension scaling by name (see ROPE_SCALINGS) and its published parameters."""

    kind: str
    factor: float = 1.0
    original_max_position: int | None = None
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn; default 0.1 ln(factor) + 1
    truncate: bool = True  # yarn: floor/ceil the ramp's ends (gpt-oss does not)
    dynamic_length: str = "sequence"  # dynamic_ntk, longrope: "sequence" or "batch" (see sequence_lengths)
    short_factor: tuple[float, ...] = ()  # longrope: one per rotated pair, for lengths up to L0
    long_factor: tuple[float, ...] = ()  # longrope: one per rotated pair, beyond L0

    @property
    def dynamic(self) -> bool:
        """Whether the frequencies depend on the current length."""
        return self.kind in ("dynamic_ntk", "longrope")


ROPE_SCALINGS: Registry = Registry("rope scaling")


def rope_frequencies(rotary_dims: int, theta: float) -> np.ndarray:
    """Inverse frequencies theta^(-2i / R) for i in [0, R/2): one per rotated pair, float32 [R/2]."""
    return (1.0 / theta ** (np.arange(0, rotary_dims, 2, dtype=np.float64) / rotary_dims)).astype(np.float32)


@ROPE_SCALINGS.register("linear")
def linear_scaling(rotary_dims: int, theta: float, scaling: RopeScaling, length=None):
    return rope_frequencies(rotary_dims, theta) / scaling.factor


@ROPE_SCALINGS.register("ntk")
def ntk_scaling(rotary_dims: int, theta: float, scaling: RopeScaling, length=None):
    return rope_frequencies(rotary_dims, theta * scaling.factor ** (rotary_dims / (rotary_dims - 2)))


@ROPE_SCALINGS.register("dynamic_ntk")
def dynamic_ntk_scaling(rotary_dims: int, theta: float, scaling: RopeScaling, length):
    """Frequencies [..., R/2] for the current length [...] (traced; one per token, or one
    scalar for all): plain RoPE up to L0, NTK beyond."""
    original = scaling.original_max_position
    growth = jnp.maximum(scaling.factor * length / original - (scaling.factor - 1), 1.0)
    # (theta * growth^(R / (R - 2)))^(-2i / R) = theta^(-2i / R) * growth^(-2i / (R - 2))
    exponents = jnp.arange(0, rotary_dims, 2, dtype=jnp.float32) / (rotary_dims - 2)
    return rope_frequencies(rotary_dims, theta) * growth.astype(jnp.float32)[..., None] ** -exponents


@ROPE_SCALINGS.register("yarn")
def yarn_scaling(rotary_dims: int, theta: float, scaling: RopeScaling, length=None):
    inv_freq = rope_frequencies(rotary_dims, theta).astype(np.float64)

    def dimension_for(rotations: float) -> float:  # the dim whose wavelength fits `rotations` times in L0
        return rotary_dims * math.log(scaling.original_max_position / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dimension_for(scaling.beta_fast), dimension_for(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dims - 1)
    if high == low:  # as transformers: a ramp of width 1e-3 rather than a division by zero
        high += 1e-3
    ramp = np.clip((np.arange(rotary_dims // 2) - low) / (high - low), 0.0, 1.0)
    extrapolated = 1.0 - ramp  # 1: keep the frequency (fast dims), 0: interpolate (slow dims)
    return (inv_freq / scaling.factor * (1 - extrapolated) + inv_freq * extrapolated).astype(np.float32)


@ROPE_SCALINGS.register("llama3")
def llama3_scaling(rotary_dims: int, theta: float, scaling: RopeScaling, length=None):
    inv_freq = rope_frequencies(rotary_dims, theta).astype(np.float64)
    wavelength = 2 * math.pi / inv_freq
    original = scaling.original_max_position
    low_freq_wavelength, high_freq_wavelength = original / scaling.low_freq_factor, original / scaling.high_freq_factor
    span = scaling.high_freq_factor - scaling.low_freq_factor  # 0: no band between the two (Llama 4 Scout)
    smooth = (original / wavelength - scaling.low_freq_factor) / span if span else np.ones_like(wavelength)
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = np.where(wavelength > low_freq_wavelength, inv_freq / scaling.factor, blended)
    return np.where(wavelength < high_freq_wavelength, inv_freq, scaled).astype(np.float32)


@ROPE_SCALINGS.register("longrope")
def longrope_scaling(rotary_dims: int, theta: float, scaling: RopeScaling, length):
    """Frequencies [..., R/2] for the current length [...]: divided by short_factor up to L0,
    by long_factor beyond."""
    inv_freq = rope_frequencies(rotary_dims, theta)
    short, long = (inv_freq / np.asarray(factors, np.float32) for factors in (scaling.short_factor, scaling.long_factor))
    return jnp.where((length > scaling.original_max_position)[..., None], long, short)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array, factor: float = 1.0) -> jax.Array:
    """Rotates the first R = 2 * len(inv_freq) dims of each head of x by angle position * inv_freq.

    x: [B, T, N, Dh]; positions: [B, T] integer; inv_freq: [R/2], or [B, T, R/2] per token
    (dynamic scalings). Dims are paired as (i, i + R/2), the "rotate half" layout of
    GPT-NeoX and Llama; dims past R pass through unchanged. The rotated dims are
    multiplied by `factor` (YaRN's attention factor; 1 otherwise).
    """
    rotary_dims = 2 * inv_freq.shape[-1]
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, R/2]
    sin, cos = jnp.sin(angles)[..., None, :] * factor, jnp.cos(angles)[..., None, :] * factor  # [B, T, 1, R/2]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., : rotary_dims // 2], x32[..., rotary_dims // 2 : rotary_dims]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x32[..., rotary_dims:]], axis=-1)
    return rotated.astype(x.dtype)


def sequence_lengths(positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """[B, T] -> [B, T]: each token's sequence length, the largest position + 1 in its run of
    equal segment ids (a packed document; padding, segment 0, is a run of its own and
    lengthens none), or in its whole row without segment ids."""
    if segment_ids is None:
        return jnp.broadcast_to(jnp.max(positions, axis=-1, keepdims=True) + 1, positions.shape)
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    runs = jnp.cumsum(starts, axis=1) - 1  # [B, T]: each token's run, counted from 0 in its row
    longest = lambda p, r: jax.ops.segment_max(p, r, num_segments=p.shape[0])[r]
    return jax.vmap(longest)(positions, runs) + 1


@dataclasses.dataclass(frozen=True)
class RoPE:
    """RoPE over the first `rotary_dims` of each head with base `theta` and an optional
    scaling: x [B, T, N, Dh], positions, segment_ids [B, T] -> x rotated."""

    rotary_dims: int
    theta: float = 10_000.0
    scaling: RopeScaling | None = None

    def __post_init__(self):
        if self.rotary_dims < 2 or self.rotary_dims % 2:
            raise ValueError(f"RoPE needs an even number >= 2 of rotary dims, got {self.rotary_dims}")
        if self.scaling is not None:
            ROPE_SCALINGS.get(self.scaling.kind)
            if self.scaling.dynamic_length not in ("sequence", "batch"):
                raise ValueError(f"dynamic_length must be 'sequence' or 'batch', got {self.scaling.dynamic_length!r}")
            pairs = self.rotary_dims // 2
            if self.scaling.kind == "longrope" and not len(self.scaling.short_factor) == len(self.scaling.long_factor) == pairs:
                raise ValueError(
                    f"longrope needs short_factor and long_factor of {pairs} values each (one per rotated pair of "
                    f"{self.rotary_dims} dims), got {len(self.scaling.short_factor)} and {len(self.scaling.long_factor)}"
                )

    def inverse_frequencies(self, length=None) -> jax.Array:
        """[R/2] float32, or [..., R/2] for a `length` [...] (the current sequence length, which
        matters only to dynamic_ntk)."""
        if self.scaling is None:
            return jnp.asarray(rope_frequencies(self.rotary_dims, self.theta))
        return jnp.asarray(ROPE_SCALINGS.get(self.scaling.kind)(self.rotary_dims, self.theta, self.scaling, length))

    @property
    def attention_factor(self) -> float:
        """The factor YaRN and LongRoPE multiply rotated queries and keys by (1 for other scalings)."""
        if self.scaling is None or self.scaling.kind not in ("yarn", "longrope"):
            return 1.0
        if self.scaling.attention_factor is not None:
            return self.scaling.attention_factor
        if self.scaling.factor <= 1:
            return 1.0
        if self.scaling.kind == "longrope":
            return math.sqrt(1 + math.log(self.scaling.factor) / math.log(self.scaling.original_max_position))
        return 0.1 * math.log(self.scaling.factor) + 1.0

    def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
        """x [B, T, N, Dh]; positions, segment_ids [B, T] (segment ids: only to tell a dynamic
        scaling where each sequence ends; see sequence_lengths)."""
        length = None  # the length a dynamic scaling adapts to
        if self.scaling is not None and self.scaling.dynamic:
            batch = self.scaling.dynamic_length == "batch"
            length = jnp.max(positions) + 1 if batch else sequence_lengths(positions, segment_ids)
        return apply_rope(x, positions, self.inverse_frequencies(length), self.attention_factor)
