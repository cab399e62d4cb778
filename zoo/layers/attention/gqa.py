"""Grouped-query attention: one module for MHA (K = H), GQA (1 < K < H) and MQA (K = 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.dispatch import check_available
from zoo.layers.attention.kernels import KERNELS
from zoo.layers.attention.kv_cache import KVCache
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.attention.projections import HeadProjections, Projections
from zoo.layers.attention.temperature import QueryTemperature
from zoo.layers.param import constant, param
from zoo.layers.rope import RoPE


class GroupedQueryAttention(HeadProjections):
    """Self-attention with H query heads sharing K key/value heads in groups of H / K.

    x: [B, T, D] -> [B, T, D]. Options: q/k/v and output biases, QK-norm (RMSNorm over Dh
    of each head, or over all heads of q and of k with `qk_norm_over="projection"`, before
    RoPE), q/k/v clipped to +-`clip_qkv`, RoPE on q and k, L2 QK-norm (`l2_qk_norm`: q and k
    divided by their root mean square over Dh, with eps and no weight, after RoPE: Llama 4), a
    `temperature` scaling each query by a factor of its position (Llama 4's NoPE layers),
    logit soft-capping, a sliding `window` (each query sees keys less than `window`
    positions away) or a `chunk` size (each query sees only keys in its own chunk of
    positions, position // chunk: Llama 4), learned per-head `sinks`, an `output_gate`
    (each head's output times sigmoid(x W_gate), W_gate [D, H, Dh], before the output
    projection: Qwen3-Next's gated attention), and the kernel by name (see KERNELS).
    Logits are scaled by `scale`, default 1/sqrt(Dh).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        rope: RoPE | None = None,
        qkv_bias: bool = False,
        out_bias: bool = False,
        qk_norm: bool = False,
        qk_norm_over: str = "head",
        clip_qkv: float | None = None,
        norm_eps: float = 1e-6,
        logit_softcap: float | None = None,
        scale: float | None = None,
        window: int | None = None,
        chunk: int | None = None,
        l2_qk_norm: bool = False,
        temperature: QueryTemperature | None = None,
        sinks: bool = False,
        output_gate: bool = False,
        kernel: str = "xla",
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}")
        if window is not None and chunk is not None:
            raise ValueError(f"a layer has a sliding window ({window}) or attention chunks ({chunk}), not both")
        check_available(kernel)  # fail early on an unknown name or one this backend lacks
        make = Projections(dtype, param_dtype, rngs, norm_eps)
        super().__init__(
            dim, num_heads, num_kv_heads, head_dim, qkv_bias=qkv_bias, out_bias=out_bias, qk_norm=qk_norm, make=make,
            qk_norm_over=qk_norm_over, clip_qkv=clip_qkv,
        )
        self.sinks = param(None, constant(0.0), (num_heads,), ("heads",), param_dtype) if sinks else None
        self.gate = make.linear(dim, (num_heads, head_dim), ("embed", "heads", "head_dim")) if output_gate else None
        self.rope = rope
        self.logit_softcap = logit_softcap
        self.scale = head_dim**-0.5 if scale is None else scale
        self.window, self.chunk = window, chunk
        self.l2_qk_norm, self.norm_eps, self.temperature = l2_qk_norm, norm_eps, temperature
        self.kernel = kernel

    def empty_cache(self, batch: int, length: int, dtype=jnp.float32, *, rolling: bool = False) -> KVCache:
        """A cache for this layer: keys and values [B, length, K, Dh]."""
        shape = (self.num_kv_heads, self.head_dim)
        return KVCache.empty(batch, length, {"k": shape, "v": shape}, dtype, rolling=rolling)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None = None,
        *,
        causal: bool = True,
        cache: KVCache | None = None,
        aligned: bool = False,
        global_tokens: jax.Array | None = None,
        bias: LogitBias | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """x: [B, T, D]; positions, segment_ids: [B, T] (segment 0 = padding; None: one segment).

        With a cache, the new keys/values go into it and attention runs over the keys it
        holds; returns the output [B, T, D] and the updated cache (or None). `aligned`:
        see AttentionMask (ignored with a cache). global_tokens: bool [B, T], tokens that
        see and are seen past the window (no cache). bias: added to the logits (ALiBi, T5).
        """
        taps.tap("attention.input", x)
        q, (k, v) = self.queries(x), self.keys_values(x)
        taps.tap("attention.q", q), taps.tap("attention.k", k), taps.tap("attention.v", v)
        if self.rope is not None:
            q, k = self.rope(q, positions, segment_ids), self.rope(k, positions, segment_ids)
            taps.tap("attention.q_rotated", q), taps.tap("attention.k_rotated", k)
        if self.l2_qk_norm:
            q, k = _unit_rms(q, self.norm_eps), _unit_rms(k, self.norm_eps)
        if self.temperature is not None:
            q = (q * self.temperature(positions)[:, :, None, None]).astype(q.dtype)
        key_positions, key_segments = positions, segment_ids
        if cache is not None and global_tokens is not None:
            raise ValueError("global tokens need the whole sequence at once; they cannot be used with a cache")
        if cache is not None:
            if segment_ids is None:
                segment_ids = jnp.ones(positions.shape, jnp.int32)
            cache, (keys, key_positions, key_segments) = cache.update({"k": k, "v": v}, positions, segment_ids)
            k, v = keys["k"], keys["v"]
            aligned = False
        mask = AttentionMask(
            positions, key_positions, segment_ids, key_segments, causal, self.window, aligned, global_tokens,
            global_tokens, chunk=self.chunk,
        )
        attend = KERNELS.get(taps.kernel(self.kernel))
        sinks = None if self.sinks is None else self.sinks[...]
        out = attend(q, k, v, mask, scale=self.scale, logit_softcap=self.logit_softcap, sinks=sinks, bias=bias)
        taps.tap("attention.values", out)
        if self.gate is not None:
            out = (out * jax.nn.sigmoid(self.gate(x).astype(jnp.float32))).astype(out.dtype)
        return taps.tap("attention.output", self.o(out)), cache


def _unit_rms(x: jax.Array, eps: float) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) over the last dim (Dh), in float32: the L2 QK-norm, which has no weight."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)
