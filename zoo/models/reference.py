"""A Llama-style decoder in one file: the whole model, read top to bottom.

No registries, configs or zoo.layers: pure jax.numpy functions over a plain nested dict
of arrays. zoo's assembled decoder (zoo.models.build) computes the same logits for a
plain Llama config; tests/test_reference_model.py checks that.

Shape letters: B batch, T sequence length, D d_model, H query heads, K key/value heads,
Dh head dim, F ffn hidden dim, V vocabulary, L layers.

    x = embed[tokens]
    for each layer:
        x = x + attention(rms_norm(x))      # grouped-query, RoPE, causal
        x = x + mlp(rms_norm(x))            # SwiGLU
    logits = rms_norm(x) @ unembed          # unembed = embed.T when tied

params = {
    "embed": [V, D],
    "unembed": [D, V],                      # absent when sizes.tie
    "final_norm": [D],
    "layers": [                             # one dict per layer
        {"attn_norm": [D], "q": [D, H, Dh], "k": [D, K, Dh], "v": [D, K, Dh], "o": [H, Dh, D],
         "mlp_norm": [D], "gate": [D, F], "up": [D, F], "down": [F, D]},
        ...
    ],
}
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sizes:
    vocab: int  # V
    d_model: int  # D
    layers: int  # L
    heads: int  # H, query heads
    kv_heads: int  # K, key/value heads; each serves H // K query heads
    head_dim: int  # Dh
    ffn: int  # F
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    tie: bool = False  # logits use the embedding table (transposed) rather than their own matrix


def init(sizes: Sizes, key: jax.Array, scale: float = 0.02) -> dict:
    """Random params (normal * scale; norm scales 1) in the layout of the module docstring."""
    s = sizes
    keys = iter(jax.random.split(key, 2 + 7 * s.layers))

    def normal(*shape):
        return scale * jax.random.normal(next(keys), shape, jnp.float32)

    params = {"embed": normal(s.vocab, s.d_model), "final_norm": jnp.ones(s.d_model), "layers": []}
    if not s.tie:
        params["unembed"] = normal(s.d_model, s.vocab)
    for _ in range(s.layers):
        params["layers"].append({
            "attn_norm": jnp.ones(s.d_model),
            "q": normal(s.d_model, s.heads, s.head_dim),
            "k": normal(s.d_model, s.kv_heads, s.head_dim),
            "v": normal(s.d_model, s.kv_heads, s.head_dim),
            "o": normal(s.heads, s.head_dim, s.d_model),
            "mlp_norm": jnp.ones(s.d_model),
            "gate": normal(s.d_model, s.ffn),
            "up": normal(s.d_model, s.ffn),
            "down": normal(s.ffn, s.d_model),
        })
    return params


def rms_norm(x, scale, eps):
    """x [..., D] / sqrt(mean(x^2) + eps) * scale [D]."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def rope(x, theta):
    """Rotates x [B, T, N, Dh] by position (0..T-1) * theta^(-2i/Dh), i in [0, Dh/2).

    "Rotate half" layout (GPT-NeoX, Llama in Hugging Face, zoo): dim i pairs with dim
    i + Dh/2, not with its neighbour i + 1 as in Meta's original interleaved layout.
    """
    T, Dh = x.shape[1], x.shape[-1]
    inv_freq = theta ** (-jnp.arange(0, Dh, 2, dtype=jnp.float32) / Dh)  # [Dh/2]
    angles = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq  # [T, Dh/2]
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]  # [T, 1, Dh/2]
    a, b = x[..., : Dh // 2], x[..., Dh // 2 :]
    return jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def attention(layer, x, sizes: Sizes):
    """Causal grouped-query self-attention: x [B, T, D] -> [B, T, D]."""
    q = rope(jnp.einsum("btd,dhe->bthe", x, layer["q"]), sizes.rope_theta)  # [B, T, H, Dh]
    k = rope(jnp.einsum("btd,dke->btke", x, layer["k"]), sizes.rope_theta)  # [B, T, K, Dh]
    v = jnp.einsum("btd,dke->btke", x, layer["v"])  # [B, T, K, Dh]
    group = sizes.heads // sizes.kv_heads  # query heads per key/value head
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)  # [B, T, H, Dh]; head h uses kv head h // group
    scores = jnp.einsum("bqhe,bshe->bhqs", q, k) / jnp.sqrt(sizes.head_dim)  # [B, H, T, T]
    T = x.shape[1]
    causal = jnp.tril(jnp.ones((T, T), bool))  # query q sees keys s <= q
    scores = jnp.where(causal, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqs,bshe->bqhe", weights, v)  # [B, T, H, Dh]
    return jnp.einsum("bthe,hed->btd", out, layer["o"])


def mlp(layer, x):
    """SwiGLU: (silu(x W_gate) * (x W_up)) W_down; x [B, T, D] -> [B, T, D] through [B, T, F]."""
    return (jax.nn.silu(x @ layer["gate"]) * (x @ layer["up"])) @ layer["down"]


def forward(params: dict, tokens: jax.Array, sizes: Sizes) -> jax.Array:
    """Logits [B, T, V] (float32) for int tokens [B, T]."""
    x = params["embed"][tokens]  # [B, T, D]
    for layer in params["layers"]:
        x = x + attention(layer, rms_norm(x, layer["attn_norm"], sizes.norm_eps), sizes)
        x = x + mlp(layer, rms_norm(x, layer["mlp_norm"], sizes.norm_eps))
    x = rms_norm(x, params["final_norm"], sizes.norm_eps)
    unembed = params["embed"].T if sizes.tie else params["unembed"]  # [D, V]
    return x @ unembed
