"""Llama 4's attention pieces: chunked local attention and its cache, NoPE layers in a RoPE model,
temperature tuning of the NoPE layers' queries, and the L2 QK-norm; each against the formula."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from helpers import jitted
from zoo import models
from zoo.config import ConfigError, ModelConfig
from zoo.layers import AttentionMask, GroupedQueryAttention, RoPE, xla_attention
from zoo.layers.attention import chunked_attention
from zoo.layers.attention.temperature import QueryTemperature

D = 32


def chunk_visible(positions, segments, chunk):
    """The chunked causal mask by its definition: same segment, not later, same chunk (position // chunk)."""
    p, s = np.asarray(positions), np.asarray(segments)
    same = (s[:, :, None] == s[:, None, :]) & (s[:, :, None] != 0)
    return same & (p[:, None, :] <= p[:, :, None]) & (p[:, :, None] // chunk == p[:, None, :] // chunk)


def packed_rows():
    """Two rows: one of 11 tokens (not a multiple of the chunk), one packing segments of 5 and 6."""
    positions = np.array([list(range(11)), list(range(5)) + list(range(6))])
    segments = np.array([[1] * 11, [1] * 5 + [2] * 6])
    return jnp.asarray(positions), jnp.asarray(segments)


@pytest.mark.parametrize("kernel", [xla_attention, lambda *a, **o: chunked_attention(*a, **o, block=4)])
def test_chunked_mask_matches_dense_masked_softmax(kernel):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 11, n, 8)), jnp.float32) for n in (4, 2, 2))
    positions, segments = packed_rows()
    mask = AttentionMask.self_attention(positions, segments, causal=True, chunk=4)
    visible = chunk_visible(positions, segments, 4)
    assert visible[0, 9].tolist() == [False] * 8 + [True, True] + [False]  # position 9 sees 8 and 9 only
    np.testing.assert_array_equal(mask.dense(), visible)
    out = kernel(q, k, v, mask, scale=8**-0.5)
    np.testing.assert_allclose(out, reference.attention(q, k, v, visible), atol=1e-5)


def test_chunked_layer_matches_reference_on_packed_segments():
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), chunk=4, rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).normal(size=(2, 11, D)).astype(np.float32)
    positions, segments = packed_rows()
    out, _ = attn(jnp.asarray(x), positions, segments)
    expected = layer_reference(attn, x, np.asarray(positions), chunk_visible(positions, segments, 4))
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("pieces", [[10], [3, 7], [9, 2]])  # prompts longer than the chunk, none a multiple of it
def test_rolling_cache_of_chunk_slots_decodes_like_the_full_forward(pieces):
    chunk, length = 4, 23
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), chunk=chunk, rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, length, D)), jnp.float32)
    positions, segments = jnp.broadcast_to(jnp.arange(length), (2, length)), jnp.ones((2, length), jnp.int32)
    full, _ = run(x, positions, segments)
    cache = attn.empty_cache(2, chunk, rolling=True)
    outs, start = [], 0
    for stop in list(np.cumsum(pieces)) + list(range(sum(pieces) + 1, length + 1)):  # the prompt, then one at a time
        out, cache = run(x[:, start:stop], positions[:, start:stop], segments[:, start:stop], cache=cache)
        outs.append(out)
        start = stop
    assert cache.length == chunk and cache.end.tolist() == [length, length]
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_chunked_cache_keeps_each_rows_own_chunk():
    """Right-padded rows of different prompt lengths: each continues within its own chunk."""
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), chunk=4, rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 12, D)), jnp.float32)
    alone, _ = run(x, jnp.arange(12)[None], jnp.ones((1, 12), jnp.int32))
    prompt = jnp.concatenate([x[:, :7], x[:, :7]])
    segments = jnp.array([[1, 1, 1, 0, 0, 0, 0], [1] * 7])
    cache = attn.empty_cache(2, 4, rolling=True)
    _, cache = run(prompt, jnp.broadcast_to(jnp.arange(7), (2, 7)), segments, cache=cache)
    for step in range(5):  # row 0 continues at position 3, row 1 at 7
        tokens = jnp.concatenate([x[:, 3 + step : 4 + step], x[:, 7 + step : 8 + step]])
        out, cache = run(tokens, jnp.array([[3 + step], [7 + step]]), jnp.ones((2, 1), jnp.int32), cache=cache)
        np.testing.assert_allclose(out[0, 0], alone[0, 3 + step], atol=1e-5)
        np.testing.assert_allclose(out[1, 0], alone[0, 7 + step], atol=1e-5)


def layer_reference(attn: GroupedQueryAttention, x, positions, visible, *, l2_eps=None, temperature=None):
    """The layer written out: projections, RoPE, then the L2 QK-norm and query temperature when given."""
    x = np.asarray(x, np.float64)
    w = lambda linear: np.asarray(linear.weight[...], np.float64)
    q, k, v = (np.einsum("btd,dhk->bthk", x, w(p)) for p in (attn.q, attn.k, attn.v))
    if attn.rope is not None:
        q, k = reference.rope(q, positions), reference.rope(k, positions)
    if l2_eps is not None:
        q = q / np.sqrt((q**2).mean(-1, keepdims=True) + l2_eps)
        k = k / np.sqrt((k**2).mean(-1, keepdims=True) + l2_eps)
    if temperature is not None:
        q = q * temperature[:, :, None, None]
    return np.einsum("bthk,hkd->btd", reference.attention(q, k, v, visible), w(attn.o))


def test_l2_qk_norm_divides_q_and_k_by_their_rms_after_rope():
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), l2_qk_norm=True, norm_eps=1e-5, rngs=nnx.Rngs(4))
    assert attn.q_norm is None  # no weights: it is not the RMS QK-norm
    x = np.random.default_rng(5).normal(size=(2, 7, D)).astype(np.float32) * 3.0
    positions = np.broadcast_to(np.arange(7), (2, 7))
    out, _ = attn(jnp.asarray(x), jnp.asarray(positions))
    visible = reference.causal_mask(2, 7)
    np.testing.assert_allclose(out, layer_reference(attn, x, positions, visible, l2_eps=1e-5), atol=1e-4)
    assert np.abs(out - layer_reference(attn, x, positions, visible)).max() > 1e-2  # the norm matters here


def test_temperature_is_llama4s_formula():
    positions = jnp.array([[0, 8190, 8191, 16382, 16383, 100_000, 1_000_000]])
    factor = QueryTemperature(8192.0, 0.1)(positions)
    p = np.asarray(positions, np.float64)
    np.testing.assert_allclose(factor, np.log(np.floor((p + 1) / 8192) + 1) * 0.1 + 1, rtol=1e-6)
    assert factor[0, :2].tolist() == [1.0, 1.0] and factor[0, 2] > 1.0  # it starts at position floor_scale - 1


def test_temperature_scales_the_queries_of_a_nope_layer():
    temperature = QueryTemperature(3.0, 0.5)  # a small floor so a short sequence crosses several steps
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=None, temperature=temperature, rngs=nnx.Rngs(6))
    x = np.random.default_rng(7).normal(size=(2, 10, D)).astype(np.float32)
    positions = np.broadcast_to(np.arange(10), (2, 10))
    out, _ = attn(jnp.asarray(x), jnp.asarray(positions))
    factor = np.log(np.floor((positions + 1) / 3) + 1) * 0.5 + 1
    visible = reference.causal_mask(2, 10)
    np.testing.assert_allclose(out, layer_reference(attn, x, positions, visible, temperature=factor), atol=1e-4)
    assert np.abs(out - layer_reference(attn, x, positions, visible)).max() > 1e-3


LLAMA4_ATTENTION = {
    "layer_pattern": ["chunked", "chunked", "chunked", "global"], "chunk_size": 3,
    "layer_rope": [True, True, True, False], "qk_l2_norm": True, "temperature_tuning": True, "temperature_floor": 2,
}


def test_config_wires_chunks_nope_layers_l2_norm_and_temperature(small_config):
    model = models.build(small_config(num_layers=4, attention=LLAMA4_ATTENTION))
    module = model.bind(model.abstract_params)
    layers = [node for path, node in nnx.iter_graph(module) if path and path[-1] == "attention"]
    assert [layer.chunk for layer in layers] == [3, 3, 3, None]
    assert [layer.rope is not None for layer in layers] == [True, True, True, False]
    assert [layer.l2_qk_norm for layer in layers] == [True, True, True, False]  # on RoPE layers only
    assert [layer.temperature for layer in layers] == [None] * 3 + [QueryTemperature(2.0, 0.1)]  # on NoPE layers only
    (group,) = model.init_cache(batch=1, length=16)
    assert [(c.length, c.rolling) for c in group] == [(3, True)] * 3 + [(16, False)]


@pytest.mark.parametrize(
    "attention, field",
    [
        ({"layer_pattern": ["chunked"]}, "chunk_size"),
        ({"chunk_size": 4}, "chunk_size"),
        ({"layer_pattern": ["chunked"], "chunk_size": 0}, "chunk_size"),
        ({"layer_pattern": ["global", "global"], "layer_rope": [False]}, "layer_rope"),
        ({"temperature_tuning": True}, "temperature_tuning"),
        ({"layer_rope": [False], "temperature_tuning": True, "temperature_floor": 0}, "temperature_floor"),
    ],
)
def test_bad_settings_name_their_field(attention, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_dict(dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, ffn_dim=48, attention=attention))


@pytest.mark.parametrize("name, value", [("layer_rope", [False]), ("qk_l2_norm", True)])
def test_rope_layer_options_need_rope_positions(name, value):
    with pytest.raises(ConfigError, match=f"attention.{name}"):
        ModelConfig.from_dict(
            dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, ffn_dim=48, attention={name: value}, position={"kind": "none"})
        )
