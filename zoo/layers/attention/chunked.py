"""Flash-style attention in plain JAX: keys in blocks, an online softmax, and a custom backward.

Logits exist one key block at a time ([B, H, T, block]), so memory grows linearly with
the sequence length in the forward pass and, because the backward pass recomputes each
block's probabilities from the saved log-normaliser instead of storing them, in
training too. Runs on every backend; equals `xla_attention` up to float rounding.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.kernels import KERNELS, softcap
from zoo.layers.attention.mask import AttentionMask

MASKED = float(jnp.finfo(jnp.float32).min)  # the logit of a hidden key, as in xla_attention
ATTENTION_OUT, ATTENTION_LSE = "chunked_attention_out", "chunked_attention_lse"  # checkpoint names of the residuals


@KERNELS.register("chunked")
def chunked_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: AttentionMask,
    *,
    scale: float,
    logit_softcap: float | None = None,
    sinks: jax.Array | None = None,
    bias: LogitBias | None = None,
    block: int = 512,
) -> jax.Array:
    """q: [B, T, H, Dh]; k: [B, S, K, Dh]; v: [B, S, K, Dv] -> [B, T, H, Dv]; see xla_attention.

    Keys are processed `block` at a time (S is padded up to a multiple with keys no
    query sees).
    """
    if mask.selected is not None:
        raise ValueError("the chunked kernel cannot take a sparse attention's key selection; use the 'xla' kernel")
    block = min(block, k.shape[1])
    padding = -k.shape[1] % block
    q_segments, k_segments = mask.segments()
    queries = {"positions": mask.q_positions, "segments": q_segments}
    keys = {"positions": mask.k_positions, "segments": k_segments}
    if mask.q_global is not None:
        queries["global"], keys["global"] = mask.q_global, mask.k_global
    if padding:  # padded keys sit in segment -1, which no query has
        pad = lambda x, value: jnp.pad(x, ((0, 0), (0, padding)) + ((0, 0),) * (x.ndim - 2), constant_values=value)
        k, v = pad(k, 0), pad(v, 0)
        keys = {name: pad(value, -1 if name == "segments" else 0) for name, value in keys.items()}
    options = _Options(scale, logit_softcap, mask.causal, mask.window, block, mask.chunk)
    has_sinks = sinks is not None
    sinks = jnp.zeros((q.shape[2],), jnp.float32) if sinks is None else sinks
    out, _ = _attention(options, has_sinks, q, k, v, sinks, bias, queries, keys)
    return out


class _Options(NamedTuple):
    """The static settings of one call (hashable: custom_vjp's non-differentiable arguments)."""

    scale: float
    cap: float | None
    causal: bool
    window: int | None
    block: int
    chunk: int | None


def _blocks(x: jax.Array, block: int) -> jax.Array:
    """[B, S, ...] -> [S / block, B, block, ...]: the key axis cut into blocks, for scan."""
    return jnp.moveaxis(x.reshape(x.shape[0], -1, block, *x.shape[2:]), 1, 0)


def _logits(options: _Options, q, k_block, bias, queries, key_block):
    """(logits [B, K, G, T, block] with hidden keys at MASKED, visible [B, 1, 1, T, block], capped logits).

    queries, key_block: {positions, segments, global?} of the queries and of this key block.
    """
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k_block, preferred_element_type=jnp.float32) * options.scale
    capped = softcap(logits, options.cap)
    if bias is not None:
        logits = capped + bias(queries["positions"], key_block["positions"]).reshape(capped.shape)
    else:
        logits = capped
    tile = AttentionMask(
        queries["positions"], key_block["positions"], queries["segments"], key_block["segments"],
        options.causal, options.window, False, queries.get("global"), key_block.get("global"), chunk=options.chunk,
    )
    visible = tile.dense()[:, None, None]
    return jnp.where(visible, logits, MASKED), visible, capped


def _grouped(q: jax.Array, kv_heads: int) -> jax.Array:
    batch, length, heads, dim = q.shape
    return q.reshape(batch, length, kv_heads, heads // kv_heads, dim)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _attention(options, has_sinks, q, k, v, sinks, bias, queries, keys):
    return _forward(options, has_sinks, q, k, v, sinks, bias, queries, keys)[0]


def _forward(options, has_sinks, q, k, v, sinks, bias, queries, keys):
    """(out [B, T, H, Dv], log-normaliser [B, K, G, T]) and the residuals for the backward pass."""
    batch, length, heads, _ = q.shape
    kv_heads, value_dim = k.shape[2], v.shape[-1]
    qg = _grouped(q, kv_heads)
    groups = heads // kv_heads

    def add_block(carry, blocks):
        running_max, total, acc = carry
        k_block, v_block, key_block = blocks
        logits, _, _ = _logits(options, qg, k_block, bias, queries, key_block)
        new_max = jnp.maximum(running_max, logits.max(axis=-1))
        correction = jnp.exp(running_max - new_max)
        p = jnp.exp(logits - new_max[..., None])
        total = total * correction + p.sum(axis=-1)
        acc = acc * correction[..., None] + jnp.einsum("bkgts,bskd->bkgtd", p.astype(v.dtype), v_block, preferred_element_type=jnp.float32)
        return (new_max, total, acc), None

    shape = (batch, kv_heads, groups, length)
    init = (jnp.full(shape, MASKED, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.zeros((*shape, value_dim), jnp.float32))
    blocks = jax.tree.map(lambda x: _blocks(x, options.block), (k, v, keys))
    (running_max, total, acc), _ = jax.lax.scan(add_block, init, blocks)
    if has_sinks:
        sink = sinks.astype(jnp.float32).reshape(1, kv_heads, groups, 1)
        new_max = jnp.maximum(running_max, sink)
        correction = jnp.exp(running_max - new_max)
        total = total * correction + jnp.exp(sink - new_max)
        acc, running_max = acc * correction[..., None], new_max
    out = (acc / total[..., None]).astype(q.dtype)  # [B, K, G, T, Dv]
    log_normaliser = running_max + jnp.log(total)
    out = jnp.moveaxis(out, 3, 1).reshape(batch, length, heads, value_dim)
    # Named so remat policies keep them (see stack.REMAT_POLICIES): otherwise a policy that keeps
    # matmul outputs replays this forward in the backward pass and keeps every block's logits.
    out, log_normaliser = checkpoint_name(out, ATTENTION_OUT), checkpoint_name(log_normaliser, ATTENTION_LSE)
    residuals = (q, k, v, sinks, bias, queries, keys, out, log_normaliser)
    return (out, log_normaliser), residuals


def _backward(options, has_sinks, residuals, cotangents):
    q, k, v, sinks, bias, queries, keys, out, log_normaliser = residuals
    d_out = cotangents[0]
    batch, length, heads, _ = q.shape
    kv_heads = k.shape[2]
    qg = _grouped(q, kv_heads).astype(jnp.float32)
    d_out = jnp.moveaxis(_grouped(d_out, kv_heads), 1, 3).astype(jnp.float32)  # [B, K, G, T, Dv]
    out_g = jnp.moveaxis(_grouped(out, kv_heads), 1, 3).astype(jnp.float32)
    delta = jnp.sum(d_out * out_g, axis=-1)  # [B, K, G, T]: sum_j p_j (dO . v_j)

    def block_grads(carry, blocks):
        d_q, d_bias = carry
        k_block, v_block, key_block = blocks
        logits, visible, capped = _logits(options, qg, k_block, bias, queries, key_block)
        p = jnp.exp(logits - log_normaliser[..., None])
        d_v = jnp.einsum("bkgts,bkgtd->bskd", p, d_out)
        d_p = jnp.einsum("bkgtd,bskd->bkgts", d_out, v_block.astype(jnp.float32))
        d_logits = jnp.where(visible, p * (d_p - delta[..., None]), 0.0)
        if bias is not None:  # the bias adds straight onto the logits
            _, bias_vjp = jax.vjp(lambda b: b(queries["positions"], key_block["positions"]), bias)
            (d_block_bias,) = bias_vjp(d_logits.reshape(d_logits.shape[0], -1, *d_logits.shape[3:]))
            d_bias = jax.tree.map(jnp.add, d_bias, d_block_bias)
        if options.cap is not None:
            d_logits = d_logits * (1.0 - jnp.square(capped / options.cap))
        d_logits = d_logits * options.scale
        d_q = d_q + jnp.einsum("bkgts,bskd->btkgd", d_logits, k_block.astype(jnp.float32))
        d_k = jnp.einsum("bkgts,btkgd->bskd", d_logits, qg)
        return (d_q, d_bias), (d_k, d_v)

    blocks = jax.tree.map(lambda x: _blocks(x, options.block), (k, v, keys))
    zeros = (jnp.zeros(qg.shape, jnp.float32), jax.tree.map(jnp.zeros_like, bias))
    (d_q, d_bias), (d_k, d_v) = jax.lax.scan(block_grads, zeros, blocks)
    unblock = lambda x: jnp.moveaxis(x, 0, 1).reshape(batch, -1, *x.shape[3:])
    d_sinks = jnp.zeros_like(sinks)
    if has_sinks:  # the sink's value is zero, so d logit_sink = -p_sink * delta
        p_sink = jnp.exp(sinks.astype(jnp.float32).reshape(1, kv_heads, -1, 1) - log_normaliser)
        d_sinks = (-jnp.sum(p_sink * delta, axis=(0, 3))).reshape(heads).astype(sinks.dtype)
    return (
        d_q.reshape(q.shape).astype(q.dtype),
        unblock(d_k).astype(k.dtype),
        unblock(d_v).astype(v.dtype),
        d_sinks,
        d_bias,
        None,  # positions, segments and global flags are not differentiable
        None,
    )


_attention.defvjp(_forward, _backward)
