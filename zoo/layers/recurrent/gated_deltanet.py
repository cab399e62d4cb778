"""The Gated DeltaNet mixer (Yang et al. 2025), as Qwen3-Next's linear-attention layers use it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention.bias import LogitBias
from zoo.layers.layout import constrain
from zoo.layers.linear import Linear
from zoo.layers.param import param
from zoo.layers.recurrent.cache import RecurrentCache
from zoo.layers.recurrent.conv import ShortConv
from zoo.layers.recurrent.delta_rule import gated_delta_rule
from zoo.layers.recurrent.gated_norm import GatedRMSNorm
from zoo.layers.recurrent.mamba2 import refuse_attention_options, step_bias
from zoo.layers.recurrent.ssd import segment_starts


def _l2_normalized(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _decay_log_uniform(low: float, high: float):
    """A_log's initialiser: A drawn uniformly from [low, high]."""

    def init(key, shape, dtype):
        return jnp.log(jax.random.uniform(key, shape, jnp.float32, low, high)).astype(dtype)

    return init


class GatedDeltaNet(nnx.Module):
    """x [B, T, D] -> [B, T, D], per token (Hk key heads of width Dk, H value heads of width Dv):

        q, k = l2_norm(silu(conv(q_proj x)))  [Hk, Dk], q scaled by Dk^-1/2
        v = silu(conv(v_proj x)) [H, Dv];  z = z_proj x [H, Dv]
        beta = sigmoid(b_proj x);  g = -exp(A_log) softplus(a_proj x + dt_bias)     [H]
        o = gated delta rule (q, k, v, g, beta)                                       (delta_rule)
        out = out_proj(rms_norm(o) * scale * silu(z))   (per value head, norm first)

    Meets SelfAttention with window = chunk = None: its cache is a RecurrentCache with the
    convolutions' last inputs ("conv_q", "conv_k" [B, W-1, Hk*Dk], "conv_v" [B, W-1, H*Dv])
    and the state ("recurrent" [B, H, Dk, Dv], float32). Packed segments start from a zero
    state; padding (segment 0) leaves it unchanged. scan_chunk: tokens per block of the
    chunked rule (training and prefill).
    """

    window = None
    chunk = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_key_heads: int,
        key_dim: int,
        value_dim: int,
        *,
        conv_width: int = 4,
        conv_bias: bool = False,
        scan_chunk: int = 64,
        norm_eps: float = 1e-6,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_heads % num_key_heads:
            raise ValueError(f"{num_heads} value heads do not share {num_key_heads} key heads evenly")
        if scan_chunk < 1:
            raise ValueError(f"scan_chunk must be positive, got {scan_chunk}")
        linear = lambda out, axes: Linear(dim, out, ("embed", *axes), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q = linear((num_key_heads, key_dim), ("kv_heads", "head_dim"))
        self.k = linear((num_key_heads, key_dim), ("kv_heads", "head_dim"))
        self.v = linear((num_heads, value_dim), ("heads", "head_dim"))
        self.z = linear((num_heads, value_dim), ("heads", "head_dim"))
        self.b = linear(num_heads, ("heads",))
        self.a = linear(num_heads, ("heads",))
        conv = lambda channels, axis: ShortConv(
            channels, conv_width, bias=conv_bias, axis=axis, param_dtype=param_dtype, rngs=rngs
        )
        self.conv_q, self.conv_k = conv(num_key_heads * key_dim, "kv_heads"), conv(num_key_heads * key_dim, "kv_heads")
        self.conv_v = conv(num_heads * value_dim, "heads")
        self.dt_bias = param(rngs.params(), step_bias(1e-3, 1e-1), (num_heads,), ("heads",), param_dtype)
        self.A_log = param(rngs.params(), _decay_log_uniform(1.0, 16.0), (num_heads,), ("heads",), param_dtype)
        self.norm = GatedRMSNorm(value_dim, norm_first=True, eps=norm_eps, axis="head_dim", dtype=dtype, param_dtype=param_dtype)
        self.out_proj = Linear(
            (num_heads, value_dim), dim, ("heads", "head_dim", "embed"), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.num_heads, self.num_key_heads, self.key_dim, self.value_dim = num_heads, num_key_heads, key_dim, value_dim
        self.conv_width, self.scan_chunk, self.dtype = conv_width, scan_chunk, dtype

    def empty_cache(self, batch: int, length: int, dtype=jnp.float32, *, rolling: bool = False) -> RecurrentCache:
        """Zero states for `batch` rows (length and rolling do not apply: the state has one size)."""
        del length, rolling
        history, keys = self.conv_width - 1, self.num_key_heads * self.key_dim
        return RecurrentCache.empty(batch, {
            "conv_q": ((history, keys), dtype),
            "conv_k": ((history, keys), dtype),
            "conv_v": ((history, self.num_heads * self.value_dim), dtype),
            "recurrent": ((self.num_heads, self.key_dim, self.value_dim), jnp.float32),
        })

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array | None = None,
        *,
        causal: bool = True,
        cache: RecurrentCache | None = None,
        aligned: bool = False,
        global_tokens: jax.Array | None = None,
        bias: LogitBias | None = None,
    ) -> tuple[jax.Array, RecurrentCache | None]:
        """As SelfAttention.__call__: x [B, T, D]; segment_ids [B, T] -> ([B, T, D], cache).
        positions and aligned are not used: order alone places a token."""
        del positions, aligned
        refuse_attention_options("Gated DeltaNet", causal, global_tokens, bias)
        batch, length, _ = x.shape
        states = {} if cache is None else cache.states
        real = jnp.ones((batch, length), bool) if segment_ids is None else segment_ids != 0

        def convolved(name, value):  # [B, T, heads, width] -> silu(conv) of the same shape, and the conv's new state
            out, state = getattr(self, f"conv_{name}")(value.reshape(batch, length, -1), segment_ids, states.get(f"conv_{name}"))
            return jax.nn.silu(out).reshape(value.shape), state

        q, conv_q = convolved("q", self.q(x))
        k, conv_k = convolved("k", self.k(x))
        v, conv_v = convolved("v", constrain(self.v(x), ("batch", "length", "heads", "head_dim")))
        q, k = _l2_normalized(q) * self.key_dim**-0.5, _l2_normalized(k)
        beta = jnp.where(real[..., None], jax.nn.sigmoid(self.b(x).astype(jnp.float32)), 0.0)  # padding: no write
        step = jax.nn.softplus(self.a(x).astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32))
        log_decay = jnp.where(real[..., None], -jnp.exp(self.A_log[...].astype(jnp.float32)) * step, 0.0)
        o, recurrent = gated_delta_rule(
            q, k, v, log_decay, beta, segment_starts(segment_ids, (batch, length)), states.get("recurrent"),
            chunk=self.scan_chunk,
        )
        taps.tap("deltanet.q", q), taps.tap("deltanet.k", k), taps.tap("deltanet.v", v)
        taps.tap("deltanet.beta", beta), taps.tap("deltanet.log_decay", log_decay), taps.tap("deltanet.rule", o)
        out = taps.tap("mixer.output", self.out_proj(self.norm(o, self.z(x))))
        if cache is None:
            return out, None
        new_states = {"conv_q": conv_q, "conv_k": conv_k, "conv_v": conv_v, "recurrent": recurrent}
        return out, cache.advanced(new_states, real.astype(jnp.int32))
