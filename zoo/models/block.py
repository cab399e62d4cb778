"""One transformer layer: self-attention, optional cross-attention and a feed-forward, each
with a residual and norms, and a group of such layers that scans as one unit."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention import KVCache, SelfAttention
from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.cross import CrossAttention
from zoo.layers.layout import constrain
from zoo.layers.moe import MoE, MoEStats
from zoo.layers.recurrent import RecurrentCache

ARRANGEMENTS = ("pre_norm", "post_norm", "parallel", "parallel_two_norms", "sandwich", "post_sublayer_norm")


class LayerSpec(NamedTuple):
    """What sets one layer apart from the others: its sliding window, whether its feed-forward is
    an MoE, its attention chunk size, whether it applies RoPE (False: a NoPE layer), and what
    mixes its tokens ("attention", a recurrent mixer: "mamba2", "gated_deltanet", or both side
    by side: "attention+mamba2")."""

    window: int | None = None
    moe: bool = False
    chunk: int | None = None
    rope: bool = True
    mixer: str = "attention"


class Block(nnx.Module):
    """x [B, T, D] -> [B, T, D]: self-attention (or a recurrent mixer meeting SelfAttention),
    cross-attention to an encoder's memory (when given one), and a feed-forward (dense, MoE,
    or none), each with a residual and norms made by `make_norm`, arranged as:

    pre_norm:  x + f(norm(x))                 (GPT-2, Llama, T5)
    post_norm: norm(x + f(x))                 (original Transformer, BERT, BART)
    parallel:  x + attn(norm(x)) + ffn(norm(x)), one norm, no cross-attention (GPT-J, PaLM, Falcon)
    parallel_two_norms: x + attn(norm(x)) + ffn(norm'(x)), a norm each (GPT-NeoX, Pythia)
    sandwich:  x + norm'(f(norm(x)))           (Gemma 2)
    post_sublayer_norm: x + norm(f(x))         a norm on each sublayer's output only (OLMo 2)
    """

    def __init__(
        self,
        attention: SelfAttention,
        feed_forward: nnx.Module | None,
        make_norm: Callable[[], nnx.Module],
        *,
        arrangement: str = "pre_norm",
        causal: bool = True,
        cross_attention: CrossAttention | None = None,
    ):
        """attention: any layer meeting SelfAttention (the tower makes its caches through it);
        feed_forward: a FeedForward, an MoE, or None (a mixer-only layer, as in Mamba-2 models)."""
        if not isinstance(attention, SelfAttention):
            raise TypeError(f"{type(attention).__name__} does not meet SelfAttention (window, empty_cache, __call__)")
        if arrangement not in ARRANGEMENTS:
            raise ValueError(f"unknown block arrangement {arrangement!r}; known: {', '.join(ARRANGEMENTS)}")
        cross, sandwich = cross_attention is not None, arrangement == "sandwich"
        if cross and arrangement.startswith("parallel"):
            raise ValueError(f"the {arrangement} arrangement has no place for cross-attention")
        if feed_forward is None and arrangement.startswith("parallel"):
            raise ValueError(f"the {arrangement} arrangement runs a feed-forward beside attention; give it one")
        after_only = arrangement == "post_sublayer_norm"
        self.attention = attention
        self.cross_attention = cross_attention
        self.ffn = feed_forward
        self.attention_norm = None if after_only else make_norm()
        self.cross_norm = make_norm() if cross and not after_only else None
        feeds = feed_forward is not None
        self.ffn_norm = None if arrangement == "parallel" or after_only or not feeds else make_norm()
        self.attention_post_norm = make_norm() if sandwich or after_only else None
        self.cross_post_norm = make_norm() if (sandwich or after_only) and cross else None
        self.ffn_post_norm = make_norm() if (sandwich or after_only) and feeds else None
        self.arrangement, self.causal = arrangement, causal

    @taps.layer()
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None,
        cache: KVCache | RecurrentCache | None = None,
        *,
        aligned: bool = False,
        memory: KVCache | None = None,
        global_tokens: jax.Array | None = None,
        bias: LogitBias | None = None,
        noise_key: jax.Array | None = None,
    ) -> tuple[jax.Array, KVCache | RecurrentCache | None, tuple[MoEStats, ...]]:
        """positions, segment_ids, global_tokens: [B, T]; memory: the encoder's keys/values for
        cross-attention; bias: the position scheme's logit bias; noise_key: a noisy router's
        training randomness. Returns the new x, the layer's updated self-attention (or mixer) cache, and
        (its MoEStats,) for an MoE layer, () for a dense one."""
        taps.tap("block.input", x)

        def attend(h):
            return self.attention(
                h, positions, segment_ids, causal=self.causal, cache=cache, aligned=aligned,
                global_tokens=global_tokens, bias=bias,
            )

        def feed_forward(h):
            if isinstance(self.ffn, MoE):
                out, stats = self.ffn(h, noise_key=noise_key)
                return out, (stats,)
            return self.ffn(h), ()

        if self.arrangement.startswith("parallel"):
            normed = self.attention_norm(x)
            update, cache = attend(normed)
            ffn_update, moe = feed_forward(normed if self.ffn_norm is None else self.ffn_norm(x))
            x = x + update + ffn_update
        else:
            x, cache = self._residual(self.attention_norm, self.attention_post_norm, x, attend)
            if self.cross_attention is not None:
                cross = lambda h: (self.cross_attention(h, memory, segment_ids), None)
                x, _ = self._residual(self.cross_norm, self.cross_post_norm, x, cross)
            moe = ()
            if self.ffn is not None:
                x, moe = self._residual(self.ffn_norm, self.ffn_post_norm, x, feed_forward)
        return taps.tap("block.output", constrain(x, ("batch", "length", "embed"))), cache, moe

    def _residual(self, norm_layer, post_norm, x, sublayer):
        """x + f(norm(x)) before-norm, norm(x + f(x)) after, x + post_norm(f(norm(x))) sandwiched,
        x + post_norm(f(x)) without a norm before; f returns (update, extra) and extra passes through."""
        if self.arrangement == "post_norm":
            update, extra = sublayer(x)
            return norm_layer(x + update), extra
        update, extra = sublayer(x if norm_layer is None else norm_layer(x))
        return x + (update if post_norm is None else post_norm(update)), extra


class BlockGroup(nnx.Module):
    """Blocks of different specs (windows, dense or MoE) that run in order, as one scanned unit.

    Layer patterns with several kinds scan over groups, so each block keeps its own static
    window, cache shape and feed-forward. cache, memory: tuples with one entry per block.
    """

    def __init__(self, blocks: list[Block]):
        self.blocks = nnx.List(blocks)

    def __call__(self, x, positions, segment_ids, cache: tuple | None = None, *, memory: tuple | None = None, **options):
        """As Block.__call__, with cache and memory tuples holding one entry per block; the
        MoEStats are those of the MoE blocks in order."""
        caches, moe = [], ()
        for index, block in enumerate(self.blocks):
            x, block_cache, block_moe = block(
                x,
                positions,
                segment_ids,
                None if cache is None else cache[index],
                memory=None if memory is None else memory[index],
                **options,
            )
            caches.append(block_cache)
            moe += block_moe
        return x, None if cache is None else tuple(caches), moe
