"""Norms, linear maps, embeddings, feed-forwards and RoPE against their formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

import reference
from zoo.layers import ACTIVATIONS, NORMS, Embedding, FeedForward, LayerNorm, Linear, RMSNorm, RoPE, apply_rope, rope_frequencies
from zoo.layers.param import logical_axes

rng = np.random.default_rng(0)
X = rng.normal(size=(2, 5, 16)).astype(np.float32)


def test_rms_norm():
    norm = RMSNorm(16, eps=1e-5)
    norm.scale[...] = jnp.linspace(0.5, 2.0, 16)
    np.testing.assert_allclose(norm(X), reference.rms_norm(X, np.linspace(0.5, 2.0, 16), 1e-5), rtol=1e-5)


def test_layer_norm():
    norm = LayerNorm(16, eps=1e-5)
    norm.scale[...] = jnp.linspace(0.5, 2.0, 16)
    norm.bias[...] = jnp.linspace(-1.0, 1.0, 16)
    x = X.astype(np.float64)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    expected = expected * np.linspace(0.5, 2.0, 16) + np.linspace(-1.0, 1.0, 16)
    np.testing.assert_allclose(norm(X), expected, rtol=1e-5, atol=1e-5)


def test_layer_norm_without_params_standardises_and_holds_nothing():
    norm = NORMS.get("layer_without_params")(16, eps=1e-5)
    x = X.astype(np.float64)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(norm(X), expected, rtol=1e-5, atol=1e-5)
    assert jax.tree.leaves(nnx.state(norm, nnx.Param)) == []


def test_rms_norm_over_two_dims_normalises_them_together():
    """OLMo 2's QK-norm: one RMS over all heads [H, Dh] of a token, one scale per (head, dim)."""
    scale = np.linspace(0.5, 2.0, 12).reshape(3, 4)
    norm = RMSNorm((3, 4), eps=1e-5, axis=("heads", "head_dim"))
    norm.scale[...] = jnp.asarray(scale, jnp.float32)
    assert logical_axes(norm.scale) == ("heads", "head_dim")
    x = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
    expected = reference.rms_norm(x.reshape(2, 5, 12), scale.reshape(12), 1e-5).reshape(2, 5, 3, 4)
    np.testing.assert_allclose(norm(x), expected, rtol=1e-5)


def test_norm_computes_in_float32_and_returns_compute_dtype():
    norm = RMSNorm(16, dtype=jnp.bfloat16)
    big = jnp.full((1, 16), 300.0, jnp.bfloat16)  # squares overflow nothing in f32
    out = norm(big)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), 1.0, atol=1e-2)


def test_linear_contracts_shaped_features():
    linear = Linear((4, 4), (3, 2), ("heads", "head_dim", "mlp", None), bias=True, rngs=nnx.Rngs(0))
    linear.bias[...] = jnp.ones((3, 2))
    x = rng.normal(size=(2, 4, 4)).astype(np.float32)
    expected = np.einsum("bij,ijkl->bkl", x, np.asarray(linear.weight[...])) + 1.0
    np.testing.assert_allclose(linear(x), expected, rtol=1e-5, atol=1e-5)
    assert logical_axes(linear.weight) == ("heads", "head_dim", "mlp", None)
    assert logical_axes(linear.bias) == ("mlp", None)
    assert float(jnp.std(linear.weight[...])) == pytest.approx(1 / math.sqrt(16), rel=0.3)


def test_embedding_lookup_and_tied_logits():
    embed = Embedding(11, 16, rngs=nnx.Rngs(0))
    tokens = jnp.array([[0, 3, 10]])
    table = np.asarray(embed.table[...])
    np.testing.assert_array_equal(embed(tokens), table[[[0, 3, 10]]])
    np.testing.assert_allclose(embed.attend(X), X @ table.T, rtol=1e-5, atol=1e-5)


def gelu_exact(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.mark.parametrize(
    "activation, formula",
    [
        ("relu", lambda x: np.maximum(x, 0)),
        ("gelu", gelu_exact),
        ("gelu_tanh", lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
        ("silu", lambda x: x / (1 + np.exp(-x))),
    ],
)
def test_activations(activation, formula):
    x = np.linspace(-4, 4, 33)
    np.testing.assert_allclose(ACTIVATIONS.get(activation)(jnp.asarray(x, jnp.float32)), formula(x), atol=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_feed_forward(gated):
    ffn = FeedForward(16, 24, activation="silu" if gated else "gelu", gated=gated, bias=True, rngs=nnx.Rngs(0))
    w = lambda linear: (np.asarray(linear.weight[...], np.float64), np.asarray(linear.bias[...], np.float64))
    (w_up, b_up), (w_down, b_down) = w(ffn.up), w(ffn.down)
    x = X.astype(np.float64)
    if gated:  # SwiGLU: down(silu(x W_gate) * (x W_up))
        w_gate, b_gate = w(ffn.gate)
        gate = x @ w_gate + b_gate
        hidden = gate / (1 + np.exp(-gate)) * (x @ w_up + b_up)
    else:  # GELU MLP: down(gelu(x W_up))
        hidden = gelu_exact(x @ w_up + b_up)
    np.testing.assert_allclose(ffn(X), hidden @ w_down + b_down, rtol=1e-4, atol=1e-5)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'swish'; known: gelu, gelu_tanh, relu, silu"):
        FeedForward(16, 24, activation="swish", rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------- RoPE


def test_rope_frequencies_formula():
    np.testing.assert_allclose(rope_frequencies(8, 10000.0), [10000.0 ** (-i / 8) for i in (0, 2, 4, 6)], rtol=1e-6)


@pytest.mark.parametrize("rotary_dims", [8, 4])
def test_rope_rotates_by_formula(rotary_dims):
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [7, 100, 3, 2048, 9]])
    out = RoPE(rotary_dims, theta=500.0)(jnp.asarray(x), jnp.asarray(positions))
    np.testing.assert_allclose(out, reference.rope(x, positions, 500.0, rotary_dims), atol=1e-4)
    np.testing.assert_array_equal(out[..., rotary_dims:], x[..., rotary_dims:])  # partial rotary passes the rest


def test_rope_keeps_norms():
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    positions = jnp.asarray(rng.integers(0, 10_000, size=(2, 5)))
    out = RoPE(8)(jnp.asarray(x), positions)
    np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 4096), st.integers(0, 4096), st.integers(-64, 64))
def test_rope_dot_product_depends_only_on_offset(m, n, shift):
    """<R(m) q, R(n) k> = <R(m + s) q, R(n + s) k> for every shift s."""
    q, k = (rng.normal(size=(1, 1, 1, 8)).astype(np.float32) for _ in range(2))
    inv_freq = jnp.asarray(rope_frequencies(8, 10000.0))

    def dot(a, b):
        rq = apply_rope(jnp.asarray(q), jnp.array([[a]]), inv_freq)
        rk = apply_rope(jnp.asarray(k), jnp.array([[b]]), inv_freq)
        return float(jnp.sum(rq * rk))

    shift = max(shift, -min(m, n))  # positions stay >= 0
    assert dot(m, n) == pytest.approx(dot(m + shift, n + shift), abs=2e-3)


def test_rope_refuses_odd_rotary_dims():
    with pytest.raises(ValueError, match="RoPE needs an even number >= 2 of rotary dims, got 5"):
        RoPE(5)
