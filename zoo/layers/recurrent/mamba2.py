"""The Mamba-2 mixer (Dao & Gu 2024): a selective state-space layer with a fixed-size state."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo.layers import taps
from zoo.layers.attention.bias import LogitBias
from zoo.layers.layout import constrain
from zoo.layers.linear import Linear
from zoo.layers.param import constant, param
from zoo.layers.recurrent.cache import RecurrentCache
from zoo.layers.recurrent.conv import ShortConv
from zoo.layers.recurrent.gated_norm import GatedRMSNorm
from zoo.layers.recurrent.ssd import segment_starts, ssd_scan


OUTPUT_NORMS = ("gate_first", "norm_first", "none")  # how the gate meets the scan's output (see Mamba2)


def refuse_attention_options(kind: str, causal: bool, global_tokens, bias) -> None:
    """A recurrent mixer runs causally over one sequence: it has no bidirectional form, no
    global tokens and no logit bias."""
    if not causal:
        raise ValueError(f"{kind} is a causal mixer: it has no bidirectional form (causal=False)")
    if global_tokens is not None:
        raise ValueError(f"{kind} has no global tokens: it sees the whole past already")
    if bias is not None:
        raise ValueError(f"{kind} takes no attention logit bias (ALiBi, T5): it has no logits")


def step_bias(low: float, high: float):
    """dt_bias's initialiser: softplus^-1 of steps drawn log-uniformly from [low, high]."""

    def init(key, shape, dtype):
        step = jnp.exp(jax.random.uniform(key, shape, jnp.float32, math.log(low), math.log(high)))
        return (step + jnp.log(-jnp.expm1(-step))).astype(dtype)

    return init


def _decay_log(key, shape, dtype):
    """A_log's initialiser: A = -1, -2, ..., -H."""
    del key
    return jnp.log(jnp.arange(1, shape[0] + 1, dtype=jnp.float32)).astype(dtype)


class Mamba2(nnx.Module):
    """x [B, T, D] -> [B, T, D], per token t (H heads of width P, state width N, G groups):

        z, x, B, C, dt = projections of the input (x, z: [H, P]; B, C: [G, N]; dt: [H])
        x, B, C = silu(causal depthwise conv over time of each)
        dt = clip(softplus(dt + dt_bias), *dt_limit);  A = -exp(A_log)
        S_t = exp(dt A) S_{t-1} + dt x B^T;  y = S_t C + D x        (ssd_scan)
        out = out_proj(gated_rms_norm(y, z))        (output_norm: gate first or norm first, G groups;
                                                     "none": out_proj(y * silu(z)))

    Meets SelfAttention with window = chunk = None: its cache is a RecurrentCache with the
    convolution's last inputs ("conv_x" [B, W-1, H*P], "conv_B", "conv_C" [B, W-1, G*N]) and
    the state ("ssm" [B, H, P, N], float32), whatever the context length. Packed segments
    start from a zero state; padding (segment 0) leaves it unchanged. scan_chunk: tokens per
    block of the chunked scan (training and prefill).
    """

    window = None
    chunk = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        state_dim: int,
        *,
        groups: int = 1,
        conv_width: int = 4,
        conv_bias: bool = True,
        bias: bool = False,
        scan_chunk: int = 256,
        dt_limit: tuple[float, float] = (0.0, math.inf),
        dt_init: tuple[float, float] = (1e-3, 1e-1),
        output_norm: str = "gate_first",
        norm_eps: float = 1e-5,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_heads % groups:
            raise ValueError(f"{num_heads} Mamba-2 heads do not split into {groups} groups")
        if scan_chunk < 1:
            raise ValueError(f"scan_chunk must be positive, got {scan_chunk}")
        if output_norm not in OUTPUT_NORMS:
            raise ValueError(f"unknown output_norm {output_norm!r}; known: {', '.join(OUTPUT_NORMS)}")
        linear = lambda out, axes, use_bias=bias: Linear(
            dim, out, ("embed", *axes), bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.z = linear((num_heads, head_dim), ("heads", "head_dim"))
        self.x = linear((num_heads, head_dim), ("heads", "head_dim"))
        self.B = linear((groups, state_dim), (None, None))
        self.C = linear((groups, state_dim), (None, None))
        self.dt = linear(num_heads, ("heads",))
        conv = lambda channels, axis: ShortConv(
            channels, conv_width, bias=conv_bias, axis=axis, param_dtype=param_dtype, rngs=rngs
        )
        self.conv_x = conv(num_heads * head_dim, "heads")
        self.conv_B, self.conv_C = conv(groups * state_dim, None), conv(groups * state_dim, None)
        self.dt_bias = param(rngs.params(), step_bias(*dt_init), (num_heads,), ("heads",), param_dtype)
        self.A_log = param(None, _decay_log, (num_heads,), ("heads",), param_dtype)
        self.D = param(None, constant(1.0), (num_heads,), ("heads",), param_dtype)
        self.norm = None if output_norm == "none" else GatedRMSNorm(
            num_heads * head_dim, group_size=num_heads * head_dim // groups, norm_first=output_norm == "norm_first",
            eps=norm_eps, axis="heads", dtype=dtype, param_dtype=param_dtype,
        )
        self.out_proj = Linear(
            (num_heads, head_dim), dim, ("heads", "head_dim", "embed"), bias=bias, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs,
        )
        self.num_heads, self.head_dim, self.state_dim, self.groups = num_heads, head_dim, state_dim, groups
        self.conv_width, self.scan_chunk, self.dt_limit, self.dtype = conv_width, scan_chunk, dt_limit, dtype

    def empty_cache(self, batch: int, length: int, dtype=jnp.float32, *, rolling: bool = False) -> RecurrentCache:
        """Zero states for `batch` rows (length and rolling do not apply: the state has one size)."""
        del length, rolling
        history, bc = self.conv_width - 1, self.groups * self.state_dim
        return RecurrentCache.empty(batch, {
            "conv_x": ((history, self.num_heads * self.head_dim), dtype),
            "conv_B": ((history, bc), dtype),
            "conv_C": ((history, bc), dtype),
            "ssm": ((self.num_heads, self.head_dim, self.state_dim), jnp.float32),
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
        refuse_attention_options("Mamba-2", causal, global_tokens, bias)
        batch, length, _ = x.shape
        states = {} if cache is None else cache.states
        real = jnp.ones((batch, length), bool) if segment_ids is None else segment_ids != 0

        def convolved(name, value):  # [B, T, ...] -> silu(conv) of the same shape, and the conv's new state
            flat = value.reshape(batch, length, -1)
            out, state = getattr(self, f"conv_{name}")(flat, segment_ids, states.get(f"conv_{name}"))
            return jax.nn.silu(out).reshape(value.shape), state

        hidden, conv_x = convolved("x", constrain(self.x(x), ("batch", "length", "heads", "head_dim")))
        B, conv_B = convolved("B", self.B(x))
        C, conv_C = convolved("C", self.C(x))
        dt = jax.nn.softplus(self.dt(x).astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32))
        dt = jnp.where(real[..., None], jnp.clip(dt, *self.dt_limit), 0.0)  # padding: no step
        decay_rate = -jnp.exp(self.A_log[...].astype(jnp.float32))
        y, ssm = ssd_scan(
            hidden, dt, decay_rate, B, C, segment_starts(segment_ids, (batch, length)), states.get("ssm"),
            chunk=self.scan_chunk,
        )
        taps.tap("mamba2.x", hidden), taps.tap("mamba2.B", B), taps.tap("mamba2.C", C), taps.tap("mamba2.dt", dt)
        taps.tap("mamba2.scan", y)
        y = y + self.D[...].astype(jnp.float32)[:, None] * hidden
        y, z = y.reshape(batch, length, -1), self.z(x).reshape(batch, length, -1)
        y = (y * jax.nn.silu(z.astype(jnp.float32))).astype(self.dtype) if self.norm is None else self.norm(y, z)
        out = taps.tap("mixer.output", self.out_proj(y.reshape(batch, length, self.num_heads, self.head_dim)))
        if cache is None:
            return out, None
        new_states = {"conv_x": conv_x, "conv_B": conv_B, "conv_C": conv_C, "ssm": ssm}
        return out, cache.advanced(new_states, real.astype(jnp.int32))
