"""Plain float64 numpy references that the tests compare zoo against."""

import numpy as np


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def attention(q, k, v, visible, scale=None, softcap=None):
    """softmax(q k^T * scale) v with key/value heads repeated to the query heads.

    q: [B, T, H, Dh]; k, v: [B, S, K, Dh]; visible: bool [B, T, S]. Rows with no visible
    key are not allowed here (they are undefined in the formula).
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    heads, kv_heads = q.shape[2], k.shape[2]
    k = np.repeat(k, heads // kv_heads, axis=2)
    v = np.repeat(v, heads // kv_heads, axis=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("bthd,bshd->bhts", q, k) * scale
    if softcap is not None:
        logits = softcap * np.tanh(logits / softcap)
    logits = np.where(visible[:, None], logits, -np.inf)
    return np.einsum("bhts,bshd->bthd", softmax(logits), v)


def causal_mask(batch, length):
    return np.broadcast_to(np.tril(np.ones((length, length), bool)), (batch, length, length))


def rms_norm(x, scale, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


def rope(x, positions, theta=10000.0, rotary_dims=None):
    """RoPE by the formula, one (i, i + R/2) pair at a time. x: [B, T, N, Dh]; positions [B, T]."""
    x = np.asarray(x, np.float64)
    out = x.copy()
    rotary_dims = x.shape[-1] if rotary_dims is None else rotary_dims
    half = rotary_dims // 2
    for i in range(half):
        angle = positions[..., None] * theta ** (-2.0 * i / rotary_dims)  # [B, T, 1]
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * np.cos(angle) - b * np.sin(angle)
        out[..., i + half] = b * np.cos(angle) + a * np.sin(angle)
    return out
