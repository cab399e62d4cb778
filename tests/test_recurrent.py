"""The pieces recurrent mixers share: the short causal convolution (against a loop over time,
with packed segments, a cache carried across calls, and padding) and the gated RMSNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.layers.recurrent import GatedRMSNorm, RecurrentCache, ShortConv, causal_conv

RNG = np.random.default_rng(0)


def conv_reference(x, weight, bias, segment_ids):
    """y[b, t] = sum over taps j of weight[j] * x[b, t - W + 1 + j], inputs of other segments skipped."""
    batch, length, channels = x.shape
    width = weight.shape[0]
    y = np.zeros((batch, length, channels))
    for b in range(batch):
        for t in range(length):
            for j in range(width):
                s = t - width + 1 + j
                if s >= 0 and segment_ids[b, s] == segment_ids[b, t]:
                    y[b, t] += weight[j] * x[b, s]
    return y + bias


def test_causal_conv_is_the_loop_over_time_within_each_segment():
    x, weight, bias = RNG.normal(size=(2, 11, 3)), RNG.normal(size=(4, 3)), RNG.normal(size=3)
    segment_ids = np.array([[1] * 5 + [2] * 6, [1] * 2 + [2] * 7 + [0] * 2])
    y, _ = causal_conv(jnp.asarray(x), jnp.asarray(weight), jnp.asarray(bias), jnp.asarray(segment_ids))
    np.testing.assert_allclose(y, conv_reference(x, weight, bias, segment_ids), atol=1e-5)


@pytest.mark.parametrize("split", [1, 2, 5])
def test_conv_state_carries_a_sequence_across_calls_and_padding_leaves_it(split):
    x, weight, bias = RNG.normal(size=(2, 9, 3)).astype(np.float32), RNG.normal(size=(4, 3)), RNG.normal(size=3)
    whole, _ = causal_conv(jnp.asarray(x), jnp.asarray(weight), jnp.asarray(bias), None)
    # the first call's second row is padded: its real tokens end one early, and the second call
    # gives that row the token it lacked first
    first_segments = np.ones((2, split), np.int32)
    first_segments[1, -1] = 0
    first, state = causal_conv(jnp.asarray(x[:, :split]), jnp.asarray(weight), jnp.asarray(bias), jnp.asarray(first_segments))
    rest = np.stack([x[0, split:], x[1, split - 1 : -1]])
    second, _ = causal_conv(jnp.asarray(rest), jnp.asarray(weight), jnp.asarray(bias), jnp.ones((2, 9 - split), jnp.int32), state)
    np.testing.assert_allclose(first[0], whole[0, :split], atol=1e-5)
    np.testing.assert_allclose(first[1, : split - 1], whole[1, : split - 1], atol=1e-5)
    np.testing.assert_allclose(second[0], whole[0, split:], atol=1e-5)
    np.testing.assert_allclose(second[1], whole[1, split - 1 : -1], atol=1e-5)


def test_short_conv_module_and_its_bad_width():
    conv = ShortConv(3, 4, rngs=nnx.Rngs(0))
    x = jnp.asarray(RNG.normal(size=(1, 6, 3)), jnp.float32)
    y, state = conv(x)
    np.testing.assert_allclose(y, conv_reference(np.asarray(x), np.asarray(conv.weight[...]), 0.0, np.ones((1, 6))), atol=1e-5)
    np.testing.assert_array_equal(state, x[:, -3:])
    with pytest.raises(ValueError, match="at least 2 taps"):
        ShortConv(3, 1, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("norm_first, group_size", [(False, 2), (False, None), (True, None)])
def test_gated_rms_norm_follows_its_formula(norm_first, group_size):
    x, z = RNG.normal(size=(2, 3, 6)), RNG.normal(size=(2, 3, 6))
    norm = GatedRMSNorm(6, group_size=group_size, norm_first=norm_first, eps=1e-6)
    norm.scale[...] = jnp.asarray(RNG.normal(size=6), jnp.float32)
    silu = z / (1 + np.exp(-z))
    h = x if norm_first else x * silu
    groups = h.reshape(2, 3, -1, group_size or 6)
    normed = (groups / np.sqrt((groups**2).mean(-1, keepdims=True) + 1e-6)).reshape(2, 3, 6) * np.asarray(norm.scale[...])
    expected = normed * silu if norm_first else normed
    np.testing.assert_allclose(norm(jnp.asarray(x), jnp.asarray(z)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        GatedRMSNorm(6, group_size=4)


def test_recurrent_cache_counts_real_tokens_and_keeps_state_dtypes():
    cache = RecurrentCache.empty(2, {"conv": ((3, 5), jnp.bfloat16), "ssm": ((2, 4, 8), jnp.float32)})
    assert cache.states["conv"].shape == (2, 3, 5) and cache.states["ssm"].dtype == jnp.float32
    later = cache.advanced({"conv": jnp.ones((2, 3, 5)), "ssm": jnp.ones((2, 2, 4, 8))}, jnp.array([[1, 1, 1], [1, 0, 0]]))
    np.testing.assert_array_equal(later.end, [3, 1])
    assert later.states["conv"].dtype == jnp.bfloat16
    assert jax.tree.structure(later) == jax.tree.structure(cache)  # a decode loop's carry keeps its shape
