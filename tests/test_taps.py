"""Taps record the real forward's intermediates without changing it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import config
from zoo.layers import taps
from zoo.models import build

TOKENS = jnp.array([[1, 5, 7, 9, 3, 4]])


def recorded(config_path):
    model = build(config.load(config_path).model)
    params = model.init(jax.random.key(0))
    plain = model.apply(params, TOKENS).logits
    with taps.recording() as record:
        logits = model.apply(params, TOKENS).logits
    return model, plain, logits, record


@pytest.fixture(scope="module")
def dense():
    return recorded("configs/tiny.toml")


def named(record, name, layer):
    [value] = [t.value for t in record if t.name == name and t.layer == layer]
    return value


def test_recording_leaves_the_forward_as_it_was(dense):
    _, plain, logits, _ = dense
    np.testing.assert_allclose(logits, plain, atol=1e-5)


def test_each_layer_is_numbered_in_order_and_feeds_the_next(dense):
    model, _, logits, record = dense
    layers = model.config.num_layers
    assert sorted({t.layer for t in record} - {None}) == list(range(layers))
    for layer in range(layers - 1):
        np.testing.assert_array_equal(named(record, "block.output", layer), named(record, "block.input", layer + 1))
    np.testing.assert_array_equal(named(record, "logits", None), logits)
    assert [t.name for t in record][:2] == ["embedding", "block.input"]


def test_attention_weights_are_causal_distributions(dense):
    model, _, _, record = dense
    weights = np.asarray(named(record, "attention.weights", 0))
    assert weights.shape == (1, model.config.num_heads, TOKENS.shape[1], TOKENS.shape[1])
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(weights, k=1) == 0)
    values = named(record, "attention.values", 0)
    v = named(record, "attention.v", 0)
    group = model.config.num_heads // model.config.num_kv_heads
    expected = jnp.einsum("bhts,bshd->bthd", weights, jnp.repeat(v, group, axis=2))
    np.testing.assert_allclose(values.reshape(expected.shape), expected, atol=1e-5)


def test_the_router_records_its_choices_per_token():
    model, plain, logits, record = recorded("configs/moe-tiny.toml")
    np.testing.assert_allclose(logits, plain, atol=1e-5)
    moe = model.config.moe
    experts = [t.value for t in record if t.name == "router.experts"]
    assert experts and all(e.shape[-1] == moe.top_k for e in experts)
    assert all(0 <= int(e.min()) and int(e.max()) < moe.num_experts for e in experts)


def test_recurrent_mixers_are_tapped_too():
    _, plain, logits, record = recorded("configs/hybrid-tiny.toml")
    np.testing.assert_allclose(logits, plain, atol=1e-4)
    names = {t.name for t in record}
    assert {"mixer.output", "attention.weights"} <= names
    assert names & {"mamba2.scan", "deltanet.rule"}


def test_outside_a_recording_a_tap_is_the_identity_and_a_traced_one_is_refused():
    x = jnp.ones(3)
    assert taps.tap("anything", x) is x
    assert not taps.active()
    with taps.recording(), pytest.raises(RuntimeError, match="eagerly"):
        jax.jit(lambda y: taps.tap("inside", y))(x)


def test_an_encoder_decoder_tags_each_tower_and_its_cross_attention():
    cfg = config.ModelConfig.from_dict(dict(
        kind="encoder_decoder", vocab_size=50, d_model=32, num_layers=2, encoder_layers=3, num_heads=4, num_kv_heads=2,
        ffn_dim=64, max_seq_len=32, position={"kind": "relative"},
    ))
    model = build(cfg)
    params = model.init(jax.random.key(0))
    source, target = jnp.array([[1, 5, 7, 9, 3]]), jnp.array([[0, 4, 2]])
    plain = model.apply(params, target, encoder_tokens=source).logits
    with taps.recording() as record:
        logits = model.apply(params, target, encoder_tokens=source).logits
    np.testing.assert_allclose(logits, plain, atol=1e-5)
    layers = {tower: sorted({t.layer for t in record if t.tower == tower} - {None}) for tower in ("encoder", "decoder")}
    assert layers == {"encoder": [0, 1, 2], "decoder": [0, 1]}
    of = lambda tower, name: [t.value for t in record if (t.tower, t.layer, t.name) == (tower, 1, name)]
    assert of("encoder", "cross_attention.weights") == [] and len(of("decoder", "attention.weights")) == 1
    [weights], [v] = of("decoder", "cross_attention.weights"), of("decoder", "cross_attention.v")
    assert weights.shape == (1, 4, 3, 5) and np.all(np.asarray(weights) > 0)  # every encoder token, no causal mask
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    expected = jnp.einsum("bhts,bshd->bthd", weights, jnp.repeat(v, 2, axis=2))
    np.testing.assert_allclose(of("decoder", "cross_attention.values")[0].reshape(expected.shape), expected, atol=1e-5)
    assert v.shape == of("decoder", "cross_attention.k")[0].shape == (1, 5, 2, 8)  # the encoder's 5 tokens, 2 key/value heads
