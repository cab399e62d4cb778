"""Position schemes against their published formulas (and Hugging Face's implementations as a second reference)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from helpers import position_scheme as build
from zoo import config, models
from zoo.layers.positions import alibi_slopes, relative_bucket, sinusoids

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def test_sinusoids_are_the_original_transformer_formula():
    dim, table = 16, np.asarray(sinusoids(jnp.arange(50), 16))
    for p in (0, 1, 7, 49):
        for i in range(dim // 2):
            angle = p / 10_000 ** (2 * i / dim)
            assert table[p, 2 * i] == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[p, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-5)


def test_learned_positions_add_their_table_and_refuse_positions_past_it():
    scheme = build("learned")
    x = jnp.zeros((1, 3, 16))
    np.testing.assert_allclose(scheme.embed(x, jnp.array([[0, 5, 31]])), scheme.table[...][jnp.array([[0, 5, 31]])])
    with pytest.raises(ValueError, match="position 32 is past the learned position table of 32 \\(model.max_seq_len\\)"):
        scheme.embed(x, jnp.array([[30, 31, 32]]))



def paper_slopes(n):
    """ALiBi's slopes as the paper's reference code computes them."""
    def power_of_two(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_two(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_two(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("heads", [8, 12, 24])
def test_alibi_slopes(heads):
    slopes = alibi_slopes(heads)
    np.testing.assert_allclose(slopes, paper_slopes(heads), rtol=1e-6)
    if heads == 8:
        np.testing.assert_allclose(slopes, [2.0**-i for i in range(1, 9)], rtol=1e-6)
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    hf = build_alibi_tensor(torch.ones(1, 2), heads, torch.float32)  # [heads, 1, keys]: slope * key position
    np.testing.assert_allclose(slopes, hf[:, 0, 1].numpy(), rtol=1e-6)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_buckets_match_t5(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = np.arange(-300, 301)
    ours = relative_bucket(jnp.asarray(relative), bidirectional=bidirectional, num_buckets=32, max_distance=128)
    theirs = T5Attention._relative_position_bucket(torch.tensor(relative), bidirectional=bidirectional)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_alibi_and_relative_biases_have_the_right_shape_and_sign():
    q_positions, k_positions = jnp.array([[3, 4]]), jnp.array([[0, 1, 2, 3, 4]])
    alibi = build("alibi").logit_bias()(q_positions, k_positions)
    expected = -alibi_slopes(4)[None, :, None, None] * np.abs(np.array([3, 4])[:, None] - np.arange(5)[None])[None, None]
    np.testing.assert_allclose(alibi, expected, rtol=1e-6)
    relative = build("relative").logit_bias()
    assert relative(q_positions, k_positions).shape == (1, 4, 2, 5)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(rope_scaling="linear", scaling_factor=0.5), "scaling_factor: must be >= 1 (it stretches the context), got 0.5"),
        (dict(rope_scaling="yarn", scaling_factor=4.0), "original_max_position: yarn scaling needs the context length"),
        (dict(rope_scaling="yarn", scaling_factor=4.0, original_max_position=4096, beta_fast=1.0, beta_slow=2.0), "beta_fast: must exceed beta_slow=2.0, got 1.0"),
        (dict(rope_scaling="llama3", scaling_factor=8.0), "original_max_position: llama3 scaling needs"),
        (dict(rope_scaling="longrope", scaling_factor=8.0, original_max_position=64), "short_factor: longrope needs short_factor and long_factor"),
        (dict(rope_scaling="longrope", original_max_position=64, short_factor=[1.0], long_factor=[0.0]), "long_factor: longrope's factors divide the frequencies: each must be > 0"),
        (dict(kind="alibi", rope_scaling="linear", scaling_factor=2.0), "rope_scaling: 'linear' scales RoPE, but kind is 'alibi'"),
        (dict(kind="rotary"), "kind: 'rotary' is not allowed"),
        (dict(rope_scaling="log"), "rope_scaling: 'log' is not allowed"),
    ],
)
def test_bad_position_configs(fields, message):
    with pytest.raises(config.ConfigError) as error:
        config.PositionConfig.from_dict(fields)
    assert message in str(error.value)


GEMMA3_POSITIONS = {  # global layers: theta 1e6 with linear scaling 8; local layers: their own theta
    "rope_theta": 1_000_000.0, "rope_scaling": "linear", "scaling_factor": 8.0, "local": {"rope_theta": 10_000.0},
}


def test_local_and_global_layers_rotate_with_their_own_theta_and_scaling(small_config):
    pattern = {"layer_pattern": ["local"] * 5 + ["global"], "window": 3}
    model = models.build(small_config(num_layers=6, attention=pattern, position=GEMMA3_POSITIONS))
    blocks = model.bind(model.abstract_params).tower.layers.blocks
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 9, 4, 8)))
    positions = np.broadcast_to(np.arange(9), (2, 9))
    by_hand = {
        "local": reference.rope(x, positions, theta=10_000.0),
        "global": reference.rope(x, positions / 8.0, theta=1_000_000.0),  # linear scaling: positions over the factor
    }
    for block, kind in zip(blocks, pattern["layer_pattern"], strict=True):
        rotated = block.attention.rope(jnp.asarray(x), jnp.asarray(positions))
        np.testing.assert_allclose(rotated, by_hand[kind], atol=1e-5)
    assert not np.allclose(by_hand["local"], by_hand["global"], atol=1e-3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"position": {"local": {"rope_theta": 10.0}}}, "position.local: is the RoPE of local layers, but attention.layer_pattern ['global'] has none"),
        ({"position": {"kind": "alibi", "local": {}}}, "position.local: sets the RoPE of local layers, but kind is 'alibi'"),
        ({"position": {"local": {"kind": "alibi"}}}, "position.local.kind: local layers' own positions are RoPE settings; got 'alibi'"),
        ({"position": {"local": {"local": {}}}}, "position.local.local: is the local layers' RoPE already"),
        ({"position": {"local": {"rope_theta": -1.0}}}, "position.local.rope_theta: must be positive"),
        (
            {"attention": {"layer_pattern": ["local", "global"], "window": 3}, "position": {"local": {"rotary_fraction": 0.1}}},
            "position.local.rotary_fraction: 0.1 of a 8-dim rotary head gives 0 rotary dims",
        ),
    ],
)
def test_bad_local_rope_configs(small_config, overrides, message):
    with pytest.raises(config.ConfigError) as error:
        small_config(**overrides)
    assert message in str(error.value)
