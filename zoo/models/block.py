"""One transformer layer: attention and feed-forward with residuals and norms."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.config import ModelConfig
from zoo.layers.attention import GroupedQueryAttention, KVCache
from zoo.layers.attention.cross import CrossAttention
from zoo.layers.attention.mla import MultiHeadLatentAttention
from zoo.layers.mlp import FeedForward
from zoo.layers.moe import MoE
from zoo.layers.norms import NORMS
from zoo.layers.attention.bias import LogitBias
from zoo.layers.positions import PositionScheme
from zoo.registry import Registry
from zoo.layers.layout import constrain


def norm(config: ModelConfig) -> nnx.Module:
    """A fresh norm over d_model of the config's kind."""
    return NORMS.get(config.norm)(
        config.d_model, eps=config.norm_eps, dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype)
    )


def _attention_options(config: ModelConfig, rngs: nnx.Rngs) -> dict:
    """The settings every attention kind takes from the config alike."""
    attention = config.attention
    return dict(
        norm_eps=config.norm_eps,
        logit_softcap=attention.logit_softcap,
        scale=attention.softmax_scale,
        kernel=attention.kernel,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        rngs=rngs,
    )


def grouped_query_attention(config: ModelConfig, window: int | None, positions: PositionScheme, rngs: nnx.Rngs):
    attention = config.attention
    return GroupedQueryAttention(
        config.d_model,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        rope=positions.rope(config.head_dim),
        qkv_bias=attention.qkv_bias,
        out_bias=attention.out_bias,
        qk_norm=attention.qk_norm,
        window=window,
        sinks=attention.sinks,
        **_attention_options(config, rngs),
    )


def latent_attention(config: ModelConfig, window: int | None, positions: PositionScheme, rngs: nnx.Rngs):
    attention = config.attention
    return MultiHeadLatentAttention(
        config.d_model,
        config.num_heads,
        kv_lora_rank=attention.kv_lora_rank,
        qk_nope_head_dim=attention.qk_nope_head_dim,
        qk_rope_head_dim=attention.qk_rope_head_dim,
        v_head_dim=attention.v_head_dim,
        q_lora_rank=attention.q_lora_rank,
        rope=positions.rope(attention.qk_rope_head_dim),
        window=window,
        **_attention_options(config, rngs),
    )


ATTENTION: Registry = Registry("attention kind")
ATTENTION.register("gqa")(grouped_query_attention)
ATTENTION.register("mla")(latent_attention)


def cross_attention(config: ModelConfig, rngs: nnx.Rngs) -> CrossAttention:
    attention = config.attention
    return CrossAttention(
        config.d_model,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        qkv_bias=attention.qkv_bias,
        out_bias=attention.out_bias,
        qk_norm=attention.qk_norm,
        **_attention_options(config, rngs),
    )


class LayerSpec(NamedTuple):
    """What sets one layer apart from the others: its sliding window and whether its feed-forward is an MoE."""

    window: int | None = None
    moe: bool = False


def feed_forward(config: ModelConfig, moe: bool, rngs: nnx.Rngs) -> FeedForward | MoE:
    dtype, param_dtype = jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)
    common = dict(activation=config.ffn_activation, gated=config.ffn_gated, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if not moe:
        return FeedForward(config.d_model, config.ffn_dim, bias=config.mlp_bias, **common)
    settings = config.moe
    return MoE(
        config.d_model,
        settings.num_experts,
        settings.top_k,
        settings.expert_ffn_dim,
        router=settings.router,
        renormalize=settings.renormalize,
        num_groups=settings.num_groups,
        top_groups=settings.top_groups,
        routed_scale=settings.routed_scale,
        capacity_factor=settings.capacity_factor,
        shared_dim=settings.shared_ffn_dim,
        **common,
    )


class Block(nnx.Module):
    """x [B, T, D] -> [B, T, D]: self-attention, cross-attention to an encoder's memory (in
    encoder-decoder models), and a feed-forward (dense or MoE), each with a residual and a
    norm arranged by `config.block`:

    pre_norm:  x + f(norm(x))                 (GPT-2, Llama, T5)
    post_norm: norm(x + f(x))                 (original Transformer, BERT, BART)
    parallel:  x + attn(norm(x)) + ffn(norm(x)), one norm, no cross-attention (GPT-J, PaLM, Falcon)
    sandwich:  x + norm'(f(norm(x)))           (Gemma 2)
    """

    def __init__(
        self,
        config: ModelConfig,
        spec: LayerSpec = LayerSpec(),
        *,
        positions: PositionScheme,
        causal: bool = True,
        cross: bool = False,
        rngs: nnx.Rngs,
    ):
        """`spec`: this layer's window and feed-forward kind; `positions`: the model's position
        scheme, whose RoPE (if any) the attention applies."""
        self.attention = ATTENTION.get(config.attention.kind)(config, spec.window, positions, rngs)
        self.cross_attention = cross_attention(config, rngs) if cross else None
        self.ffn = feed_forward(config, spec.moe, rngs)
        self.attention_norm = norm(config)
        self.cross_norm = norm(config) if cross else None
        self.ffn_norm = None if config.block == "parallel" else norm(config)
        sandwich = config.block == "sandwich"
        self.attention_post_norm = norm(config) if sandwich else None
        self.cross_post_norm = norm(config) if sandwich and cross else None
        self.ffn_post_norm = norm(config) if sandwich else None
        self.arrangement, self.causal = config.block, causal

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None,
        cache: KVCache | None = None,
        *,
        aligned: bool = False,
        memory: KVCache | None = None,
        global_tokens: jax.Array | None = None,
        bias: LogitBias | None = None,
        noise_key: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | None, dict]:
        """positions, segment_ids, global_tokens: [B, T]; memory: the encoder's keys/values for
        cross-attention; bias: the position scheme's logit bias; noise_key: a noisy router's
        training randomness. Returns the new x, the layer's updated self-attention cache, and
        an MoE layer's aux (see MoE; {} for a dense layer)."""

        def attend(h):
            return self.attention(
                h, positions, segment_ids, causal=self.causal, cache=cache, aligned=aligned,
                global_tokens=global_tokens, bias=bias,
            )

        def feed_forward(h):
            if isinstance(self.ffn, MoE):
                return self.ffn(h, noise_key=noise_key)
            return self.ffn(h), {}

        if self.arrangement == "parallel":
            normed = self.attention_norm(x)
            update, cache = attend(normed)
            ffn_update, aux = feed_forward(normed)
            x = x + update + ffn_update
        else:
            x, cache = self._residual(self.attention_norm, self.attention_post_norm, x, attend)
            if self.cross_attention is not None:
                cross = lambda h: (self.cross_attention(h, memory, segment_ids), None)
                x, _ = self._residual(self.cross_norm, self.cross_post_norm, x, cross)
            x, aux = self._residual(self.ffn_norm, self.ffn_post_norm, x, feed_forward)
        return constrain(x, ("batch", "length", "embed")), cache, aux

    def _residual(self, norm_layer, post_norm, x, sublayer):
        """x + f(norm(x)) before-norm, norm(x + f(x)) after, x + post_norm(f(norm(x))) sandwiched;
        f returns (update, extra) and extra passes through."""
        if self.arrangement == "post_norm":
            update, extra = sublayer(x)
            return norm_layer(x + update), extra
        update, extra = sublayer(norm_layer(x))
        return x + (update if post_norm is None else post_norm(update)), extra


class BlockGroup(nnx.Module):
    """Blocks of different specs (windows, dense or MoE) that run in order, as one scanned unit.

    Layer patterns with several kinds scan over groups, so each block keeps its own static
    window, cache shape and feed-forward. cache, memory: tuples with one entry per block;
    aux: {block index: that block's aux} for its MoE blocks.
    """

    def __init__(self, config: ModelConfig, specs: tuple[LayerSpec, ...], *, positions: PositionScheme, causal: bool = True, cross: bool = False, rngs: nnx.Rngs):
        self.blocks = nnx.List([Block(config, spec, positions=positions, causal=causal, cross=cross, rngs=rngs) for spec in specs])

    def __call__(self, x, positions, segment_ids, cache: tuple | None = None, *, memory: tuple | None = None, **options):
        """As Block.__call__, with cache and memory tuples holding one entry per block."""
        caches, aux = [], {}
        for index, block in enumerate(self.blocks):
            x, block_cache, block_aux = block(
                x,
                positions,
                segment_ids,
                None if cache is None else cache[index],
                memory=None if memory is None else memory[index],
                **options,
            )
            caches.append(block_cache)
            if block_aux:
                aux[index] = block_aux
        return x, None if cache is None else tuple(caches), aux
