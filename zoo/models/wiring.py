"""From a config to layers: the one place that reads a ModelConfig to build them.

Layers (zoo.layers) take explicit sizes and settings and never see a config. This
module turns a ModelConfig's fields into those arguments: position schemes,
self-attention kinds and recurrent mixers by name (POSITIONS, ATTENTION, RECURRENT),
feed-forwards, blocks, towers, and the two ends. Reading it shows every field a model
uses and where it goes.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig, PositionConfig
from zoo.layers.attention import GroupedQueryAttention
from zoo.layers.attention.cross import CrossAttention
from zoo.layers.attention.mla import MultiHeadLatentAttention
from zoo.layers.attention.temperature import QueryTemperature
from zoo.layers.linear import Linear
from zoo.layers.mlp import FeedForward
from zoo.layers.moe import MoE
from zoo.layers.norms import NORMS
from zoo.layers.parallel_mixers import ParallelMixers
from zoo.layers.recurrent import GatedDeltaNet, Mamba2
from zoo.layers.positions import (
    AlibiPositions, LearnedPositions, PositionScheme, RelativePositionBias, RotaryPositions, SinusoidalPositions,
)
from zoo.layers.rope import RopeScaling
from zoo.models.block import Block, BlockGroup, LayerSpec
from zoo.models.ends import Embedder, Head, MaskedLMHead
from zoo.models.stack import period, stack
from zoo.models.tower import Tower
from zoo.registry import Registry


def dtypes(config: ModelConfig) -> dict:
    """The compute and parameter dtypes every layer takes."""
    return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


def norm(config: ModelConfig) -> nnx.Module:
    """A fresh norm over d_model of the config's kind."""
    return NORMS.get(config.norm)(config.d_model, eps=config.norm_eps, **dtypes(config))


# Position schemes: (position config, tower sizes) -> scheme.
POSITIONS: Registry[Callable[..., PositionScheme]] = Registry("position scheme")


def rope_scaling(position: PositionConfig) -> RopeScaling | None:
    if position.rope_scaling == "none":
        return None
    return RopeScaling(
        position.rope_scaling,
        factor=position.scaling_factor,
        original_max_position=position.original_max_position,
        low_freq_factor=position.low_freq_factor,
        high_freq_factor=position.high_freq_factor,
        beta_fast=position.beta_fast,
        beta_slow=position.beta_slow,
        attention_factor=position.attention_factor,
        truncate=position.yarn_truncate,
        dynamic_length=position.dynamic_length,
        short_factor=position.short_factor,
        long_factor=position.long_factor,
    )


POSITIONS.register("none")(lambda position, **_: PositionScheme())
POSITIONS.register("rope")(
    lambda position, **_: RotaryPositions(position.rope_theta, position.rotary_fraction, rope_scaling(position))
)
POSITIONS.register("sinusoidal")(lambda position, *, dim, **_: SinusoidalPositions(dim))
POSITIONS.register("learned")(
    lambda position, *, dim, max_positions, rngs, **_: LearnedPositions(max_positions, dim, rngs=rngs)
)
POSITIONS.register("alibi")(lambda position, *, num_heads, **_: AlibiPositions(num_heads))
POSITIONS.register("relative")(
    lambda position, *, num_heads, causal, rngs, **_: RelativePositionBias(
        num_heads, num_buckets=position.relative_buckets, max_distance=position.relative_max_distance,
        bidirectional=not causal, rngs=rngs,
    )
)


def position_scheme(
    position: PositionConfig, *, dim: int, num_heads: int, max_positions: int, causal: bool, rngs: nnx.Rngs
) -> PositionScheme:
    """The scheme `position.kind` names, for a tower of width `dim` with `num_heads` heads."""
    return POSITIONS.get(position.kind)(
        position, dim=dim, num_heads=num_heads, max_positions=max_positions, causal=causal, rngs=rngs
    )


def _attention_options(config: ModelConfig, rngs: nnx.Rngs) -> dict:
    """The settings every attention kind takes from the config alike."""
    attention = config.attention
    return dict(
        norm_eps=config.norm_eps, logit_softcap=attention.logit_softcap, scale=attention.softmax_scale,
        kernel=attention.kernel, rngs=rngs, **dtypes(config),
    )


# Self-attention kinds: (config, the layer's LayerSpec, the tower's position scheme, rngs) -> a SelfAttention.
ATTENTION: Registry[Callable[..., nnx.Module]] = Registry("attention kind")


@ATTENTION.register("gqa")
def grouped_query_attention(config: ModelConfig, spec: LayerSpec, scheme: PositionScheme, rngs: nnx.Rngs):
    attention = config.attention
    rope = scheme.rope(config.head_dim) if spec.rope else None
    temperature = None
    if attention.temperature_tuning and rope is None:
        temperature = QueryTemperature(attention.temperature_floor, attention.temperature_scale)
    return GroupedQueryAttention(
        config.d_model, config.num_heads, config.num_kv_heads, config.head_dim,
        rope=rope, qkv_bias=attention.qkv_bias, out_bias=attention.out_bias,
        qk_norm=attention.qk_norm, qk_norm_over=attention.qk_norm_over, clip_qkv=attention.clip_qkv,
        window=spec.window, sinks=attention.sinks, chunk=spec.chunk, output_gate=attention.output_gate,
        l2_qk_norm=attention.qk_l2_norm and rope is not None, temperature=temperature,
        **_attention_options(config, rngs),
    )


@ATTENTION.register("mla")
def latent_attention(config: ModelConfig, spec: LayerSpec, scheme: PositionScheme, rngs: nnx.Rngs):
    attention = config.attention
    return MultiHeadLatentAttention(
        config.d_model, config.num_heads, kv_lora_rank=attention.kv_lora_rank,
        qk_nope_head_dim=attention.qk_nope_head_dim, qk_rope_head_dim=attention.qk_rope_head_dim,
        v_head_dim=attention.v_head_dim, q_lora_rank=attention.q_lora_rank,
        rope=scheme.rope(attention.qk_rope_head_dim), window=spec.window, chunk=spec.chunk, indexer=attention.sparse(),
        latent_norm=attention.latent_norm,
        **_attention_options(config, rngs),
    )


def cross_attention(config: ModelConfig, rngs: nnx.Rngs) -> CrossAttention:
    attention = config.attention
    return CrossAttention(
        config.d_model, config.num_heads, config.num_kv_heads, config.head_dim, qkv_bias=attention.qkv_bias,
        out_bias=attention.out_bias, qk_norm=attention.qk_norm, **_attention_options(config, rngs),
        qk_norm_over=attention.qk_norm_over, clip_qkv=attention.clip_qkv,
    )


# Recurrent mixers, the non-attention entries of attention.layer_pattern: (config, rngs) -> a layer meeting SelfAttention.
RECURRENT: Registry[Callable[..., nnx.Module]] = Registry("recurrent mixer")


@RECURRENT.register("mamba2")
def mamba2(config: ModelConfig, rngs: nnx.Rngs) -> Mamba2:
    sizes = config.mamba2
    return Mamba2(
        config.d_model, sizes.num_heads, sizes.head_dim, sizes.state_dim, groups=sizes.groups,
        conv_width=sizes.conv_width, conv_bias=sizes.conv_bias, bias=sizes.bias, scan_chunk=sizes.scan_chunk,
        dt_limit=sizes.dt_limit or (0.0, math.inf), dt_init=sizes.dt_init, output_norm=sizes.output_norm,
        norm_eps=config.norm_eps, rngs=rngs,
        **dtypes(config),
    )


@RECURRENT.register("gated_deltanet")
def gated_deltanet(config: ModelConfig, rngs: nnx.Rngs) -> GatedDeltaNet:
    sizes = config.gated_deltanet
    return GatedDeltaNet(
        config.d_model, sizes.num_heads, sizes.num_key_heads, sizes.key_dim, sizes.value_dim,
        conv_width=sizes.conv_width, scan_chunk=sizes.scan_chunk, norm_eps=config.norm_eps, rngs=rngs, **dtypes(config),
    )


def token_mixer(config: ModelConfig, spec: LayerSpec, scheme: PositionScheme, rngs: nnx.Rngs) -> nnx.Module:
    """The layer's self-attention of attention.kind, the recurrent mixer its spec names, or
    both side by side ("attention+mamba2")."""
    mixers = [
        ATTENTION.get(config.attention.kind)(config, spec, scheme, rngs) if name == "attention" else RECURRENT.get(name)(config, rngs)
        for name in spec.mixer.split("+")
    ]
    return mixers[0] if len(mixers) == 1 else ParallelMixers(*mixers)


def feed_forward(config: ModelConfig, moe: bool, rngs: nnx.Rngs) -> FeedForward | MoE | None:
    """The layer's MoE, its dense feed-forward, or None when ffn_dim is 0 (a mixer-only layer)."""
    common = dict(activation=config.ffn_activation, gated=config.ffn_gated, rngs=rngs, **dtypes(config))
    if not moe:
        if config.ffn_dim == 0:
            return None
        return FeedForward(config.d_model, config.ffn_dim, bias=config.mlp_bias, **common)
    settings = config.moe
    return MoE(
        config.d_model, settings.num_experts, settings.top_k, settings.expert_ffn_dim, router=settings.router,
        renormalize=settings.renormalize, num_groups=settings.num_groups, top_groups=settings.top_groups,
        routed_scale=settings.routed_scale, capacity_factor=settings.capacity_factor,
        shared_dim=settings.shared_ffn_dim, shared_gate=settings.shared_gate, router_bias=settings.router_bias,
        expert_bias=settings.expert_bias, swiglu_limit=settings.swiglu_limit, swiglu_alpha=settings.swiglu_alpha,
        weights_on_inputs=settings.weights_on_inputs, **common,
    )


def block(config: ModelConfig, spec: LayerSpec, *, scheme: PositionScheme, causal: bool, cross: bool, rngs: nnx.Rngs) -> Block:
    """One layer with `spec`'s mixer, window and feed-forward; `scheme` gives the attention its RoPE."""
    attention = token_mixer(config, spec, scheme, rngs)
    cross_attending = cross_attention(config, rngs) if cross else None
    return Block(
        attention, feed_forward(config, spec.moe, rngs), functools.partial(norm, config),
        arrangement=config.block, causal=causal, cross_attention=cross_attending,
    )


def layer_specs(config: ModelConfig, num_layers: int) -> list[LayerSpec]:
    """Each layer's mixer, window, chunk and RoPE (from attention.layer_pattern) and feed-forward kind (from moe)."""
    attention, moe = config.attention, config.moe
    windows, chunks, ropes, mixers = (
        attention.layer_windows(), attention.layer_chunks(), attention.layer_ropes(), attention.layer_mixers()
    )
    return [
        LayerSpec(
            windows[index % len(windows)],
            moe is not None and index >= moe.first_dense and (index - moe.first_dense) % moe.every == moe.offset,
            chunks[index % len(chunks)],
            ropes[index % len(ropes)] and mixers[index % len(mixers)].startswith("attention"),
            mixers[index % len(mixers)],
        )
        for index in range(num_layers)
    ]


def stack_specs(config: ModelConfig, num_layers: int) -> list[list[LayerSpec]]:
    """The layer specs of each stack of a tower: the first dense layers (if any), then the rest."""
    specs = layer_specs(config, num_layers)
    first = config.moe.first_dense if config.moe is not None else 0
    return [specs[:first], specs[first:]] if first else [specs]


def layer_locations(config: ModelConfig, num_layers: int) -> list[tuple[int, int | None, int]]:
    """Where each layer's params live: (stack index, block index within a BlockGroup or None
    for a plain stacked Block, index along the stack's `layers` axis)."""
    locations = []
    for index, specs in enumerate(stack_specs(config, num_layers)):
        width = len(period(specs))
        locations += [(index, None if width == 1 else i % width, i // width) for i in range(len(specs))]
    return locations


def tower(config: ModelConfig, num_layers: int, *, causal: bool, cross: bool = False, rngs: nnx.Rngs) -> Tower:
    """A tower of `num_layers` blocks (cross-attending to an encoder's memory when `cross`).
    Local (windowed) layers take their RoPE from position.local when it is set."""
    sizes = dict(dim=config.d_model, num_heads=config.num_heads, max_positions=config.max_seq_len, causal=causal)
    scheme = position_scheme(config.position, **sizes, rngs=rngs)
    local = config.position.local
    local_scheme = scheme if local is None else position_scheme(local, **sizes, rngs=rngs)

    def layer(spec: LayerSpec, rngs: nnx.Rngs) -> Block:
        layer_scheme = local_scheme if spec.window is not None else scheme
        return block(config, spec, scheme=layer_scheme, causal=causal, cross=cross, rngs=rngs)

    stacks = []
    for specs in stack_specs(config, num_layers):
        unit = period(specs)
        if len(unit) == 1:
            make = lambda r, spec=unit[0]: layer(spec, r)
        else:
            make = lambda r, unit=unit: BlockGroup([layer(spec, r) for spec in unit])
        stacks.append(stack(make, len(specs) // len(unit), rngs))
    final_norm = None if config.block == "post_norm" else norm(config)
    return Tower(
        stacks, scheme, final_norm, remat=config.remat, unroll=not config.scan_layers, cache_dtype=jnp.dtype(config.dtype)
    )


def embedder(config: ModelConfig, rngs: nnx.Rngs) -> Embedder:
    return Embedder(
        config.vocab_size, config.d_model, token_types=config.token_types, scale=config.embedding_scale,
        norm=norm(config) if config.embedding_norm else None, rngs=rngs, **dtypes(config),
    )


def head(config: ModelConfig, rngs: nnx.Rngs) -> Head:
    mlm = None
    if config.mlm_head:
        mlm = MaskedLMHead(
            config.d_model, config.vocab_size, norm(config), activation=config.ffn_activation, rngs=rngs, **dtypes(config)
        )
    unembed = None
    if not config.tie_embeddings:
        unembed = Linear(config.d_model, config.vocab_size, ("embed", "vocab"), rngs=rngs, **dtypes(config))
    return Head(unembed, mlm=mlm, softcap=config.final_logit_softcap)
