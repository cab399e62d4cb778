"""RoPE's context-extension scalings (linear, NTK, dynamic NTK, YaRN, Llama 3, LongRoPE) against their formulas and transformers' rope initialisation."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import position_scheme as build
from zoo import config, models
from zoo.layers.rope import RoPE, RopeScaling, apply_rope, rope_frequencies, sequence_lengths

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def test_linear_scaling_is_rope_at_positions_over_the_factor():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 2, 16)), jnp.float32)
    positions_ = jnp.array([[0, 3, 10, 100, 1000, 4095]])
    scaled = RoPE(16, scaling=RopeScaling("linear", factor=4.0))(x, positions_)
    plain_at_fraction = apply_rope(x, positions_ / 4.0, jnp.asarray(rope_frequencies(16, 10_000.0)))
    np.testing.assert_allclose(scaled, plain_at_fraction, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "ntk", "dynamic_ntk", "yarn", "llama3"])
def test_every_scaling_is_plain_rope_at_factor_one(kind):
    scaling = RopeScaling(kind, factor=1.0, original_max_position=4096)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 5, 2, 16)), jnp.float32)
    positions_ = jnp.array([[0, 1, 100, 2000, 4095]])  # within the original context (dynamic NTK grows past it)
    np.testing.assert_allclose(RoPE(16, scaling=scaling)(x, positions_), RoPE(16)(x, positions_), atol=1e-6)


def ntk_base(theta, factor, dim):
    return theta * factor ** (dim / (dim - 2))


def test_ntk_rescales_the_base():
    np.testing.assert_allclose(
        RoPE(16, 500.0, RopeScaling("ntk", factor=8.0)).inverse_frequencies(),
        rope_frequencies(16, ntk_base(500.0, 8.0, 16)),
        rtol=1e-6,
    )


def test_dynamic_ntk_grows_with_the_length():
    rope = RoPE(16, 10_000.0, RopeScaling("dynamic_ntk", factor=4.0, original_max_position=1024))
    np.testing.assert_allclose(rope.inverse_frequencies(512), rope_frequencies(16, 10_000.0), rtol=1e-6)
    base = 10_000.0 * (4.0 * 3000 / 1024 - 3.0) ** (16 / 14)
    np.testing.assert_allclose(rope.inverse_frequencies(3000), rope_frequencies(16, base), rtol=1e-5)


def dynamic_reference(x, positions_, lengths, theta, factor, original):
    """RoPE (rotate-half pairs) with each token's own NTK base theta' = theta * (factor * L / L0
    - (factor - 1))^(R / (R - 2)), L its sequence length (plain RoPE while L <= L0)."""
    x, out = np.asarray(x, np.float64), np.empty(x.shape)
    half = x.shape[-1] // 2
    for b, t in np.ndindex(*positions_.shape):
        base = theta * max(factor * lengths[b][t] / original - (factor - 1), 1.0) ** (2 * half / (2 * half - 2))
        angle = positions_[b, t] / base ** (np.arange(half) / half)
        x1, x2 = x[b, t, :, :half], x[b, t, :, half:]
        out[b, t] = np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle), x2 * np.cos(angle) + x1 * np.sin(angle)], -1)
    return out


def test_dynamic_ntk_scales_each_sequence_by_its_own_length():
    scaling = RopeScaling("dynamic_ntk", factor=4.0, original_max_position=8)
    rope = RoPE(16, 10_000.0, scaling)
    # row 0: documents of 5 and 11 tokens packed; row 1: 12 tokens, then 4 of padding (segment 0)
    segment_ids = np.array([[1] * 5 + [2] * 11, [1] * 12 + [0] * 4])
    positions_ = np.array([[*range(5), *range(11)], [*range(12), *range(4)]])
    lengths = np.array([[5] * 5 + [11] * 11, [12] * 12 + [4] * 4])
    np.testing.assert_array_equal(sequence_lengths(jnp.asarray(positions_), jnp.asarray(segment_ids)), lengths)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 2, 16)), jnp.float32)
    got = rope(x, jnp.asarray(positions_), jnp.asarray(segment_ids))
    np.testing.assert_allclose(got, dynamic_reference(x, positions_, lengths, 10_000.0, 4.0, 8), atol=1e-5)
    step = np.array([[3], [12]])  # cached decoding: one token a row, each row as long as its position + 1
    got = rope(x[:, :1], jnp.asarray(step))
    np.testing.assert_allclose(got, dynamic_reference(x[:, :1], step, step + 1, 10_000.0, 4.0, 8), atol=1e-5)

    batch = RoPE(16, 10_000.0, dataclasses.replace(scaling, dynamic_length="batch"))  # every token the longest: 12
    got = batch(x, jnp.asarray(positions_), jnp.asarray(segment_ids))
    np.testing.assert_allclose(got, dynamic_reference(x, positions_, np.full((2, 16), 12), 10_000.0, 4.0, 8), atol=1e-5)
    hf_inv_freq, _ = hf_rope("dynamic", 16, 10_000.0, max_position=8, seq_len=torch.tensor(12), factor=4.0)
    np.testing.assert_allclose(got, apply_rope(x, jnp.asarray(positions_), jnp.asarray(hf_inv_freq)), atol=1e-5)


def dynamic_config(small_config, dynamic_length):
    """The small model with dynamic NTK RoPE past 8 positions (so a row of 10 is scaled)."""
    position = dict(rope_scaling="dynamic_ntk", scaling_factor=4.0, original_max_position=8, dynamic_length=dynamic_length)
    return small_config(position=position)


@pytest.fixture(scope="module")
def dynamic_rows():
    """Rows of 10 and 14 tokens, and the two in one batch (the short one padded)."""
    long = np.random.default_rng(3).integers(1, 97, size=(1, 14))
    short = long[:, 4:]
    batch = np.concatenate([np.pad(short, ((0, 0), (0, 4))), long])
    return short, long, batch, np.array([[1] * 10 + [0] * 4, [1] * 14])


@pytest.mark.parametrize("dynamic_length", ["sequence", "batch"])
def test_a_rows_dynamic_ntk_logits_do_not_depend_on_its_batch(small_config, dynamic_rows, dynamic_length):
    model = models.build(dynamic_config(small_config, dynamic_length))
    params = model.init(jax.random.key(0))
    short, long, batch, segment_ids = dynamic_rows
    batched = model.apply(params, batch, segment_ids=segment_ids).logits
    alone = model.apply(params, short).logits[0]
    np.testing.assert_allclose(batched[1], model.apply(params, long).logits[0], atol=1e-5)  # the longest row is itself either way
    if dynamic_length == "sequence":
        np.testing.assert_allclose(batched[0, :10], alone, atol=1e-5)
        packed = model.apply(params, np.concatenate([long[:, :6], short], axis=1), segment_ids=np.array([[1] * 6 + [2] * 10])).logits
        np.testing.assert_allclose(packed[0, :6], model.apply(params, long[:, :6]).logits[0], atol=1e-5)
        np.testing.assert_allclose(packed[0, 6:], alone, atol=1e-5)
    else:  # transformers' way: the short row is scaled for the batch's 14 positions
        assert np.abs(batched[0, :10] - alone).max() > 1e-3


def test_dynamic_ntk_matches_transformers_per_batch_or_per_row(small_config, dynamic_rows, tmp_path):
    """transformers scales a batch by its longest row ("batch"); "sequence" gives each row what
    transformers gives it alone."""
    from zoo import runs
    from zoo.hf import import_run

    def hf_llama(rope_parameters):
        hf_config = transformers.LlamaConfig(
            vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=8, rope_parameters=rope_parameters,
        )
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(hf_config).eval()

    plain = hf_llama({"rope_type": "default", "rope_theta": 10_000.0})  # the same weights, imported
    plain.save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_run(tmp_path / "hf", tmp_path / "run")
    run = runs.load(tmp_path / "run")
    short, _, batch, segment_ids = dynamic_rows
    with torch.no_grad():  # a fresh module each time: transformers' dynamic RoPE keeps the longest length it saw
        dynamic = lambda: hf_llama({"rope_type": "dynamic", "rope_theta": 10_000.0, "factor": 4.0})
        hf_alone = dynamic()(torch.from_numpy(short)).logits.numpy()[0]
        hf_batch = dynamic()(torch.from_numpy(batch), attention_mask=torch.from_numpy(segment_ids)).logits.numpy()
    for dynamic_length, expected in (("batch", hf_batch[0, :10]), ("sequence", hf_alone)):
        position = dynamic_config(small_config, dynamic_length).position
        model = models.build(dataclasses.replace(run.config.model, position=position))
        logits = model.apply(run.params, batch, segment_ids=segment_ids).logits
        np.testing.assert_allclose(logits[0, :10], expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(logits[1], hf_batch[1], atol=1e-5, rtol=1e-5)


def hf_rope(rope_type, dim, theta=500_000.0, max_position=8 * 4096, seq_len=None, **parameters):
    """Hugging Face's inverse frequencies and attention factor for a head of `dim` (at the
    current length `seq_len`, for dynamic scalings)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = transformers.LlamaConfig(
        hidden_size=dim * 4, num_attention_heads=4, max_position_embeddings=max_position,
        rope_parameters={"rope_type": rope_type, "rope_theta": theta, **parameters},
    )
    inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](hf_config, "cpu", seq_len=seq_len)
    return inv_freq.numpy(), factor


def yarn_reference(dim, theta, factor, original, beta_fast, beta_slow, truncate=True):
    """YaRN (Peng et al. 2023, eq. 17-19), written out: dims whose wavelength fits fewer than
    beta_slow times in the original context are interpolated, more than beta_fast kept, a ramp
    between, its ends rounded out to whole dims when `truncate`."""
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
    rotations = original * inv_freq / (2 * math.pi)  # how many turns each dim makes over the original context
    # the dim index where `r` turns fit; the ramp runs between the beta_fast and beta_slow dims
    dim_of = lambda r: dim * math.log(original / (r * 2 * math.pi)) / (2 * math.log(theta))
    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
    assert np.all((rotations > beta_fast) <= (ramp == 0))  # fast dims are kept
    return inv_freq / factor * ramp + inv_freq * (1 - ramp), 0.1 * math.log(factor) + 1


def llama3_reference(dim, theta, factor, original, low_freq_factor, high_freq_factor):
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
    out = []
    for f in inv_freq:
        wavelength = 2 * math.pi / f
        if wavelength < original / high_freq_factor:
            out.append(f)
        elif wavelength > original / low_freq_factor:
            out.append(f / factor)
        else:
            smooth = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out)


YARN_CASES = [  # factor, beta_fast, beta_slow, original_max_position, theta, rotary dims
    (8.0, 32.0, 1.0, 4096, 500_000.0, 64),
    (32.0, 32.0, 1.0, 4096, 150_000.0, 64),  # gpt-oss (truncate = false)
    (4.0, 16.0, 2.0, 2048, 10_000.0, 128),
    (40.0, 32.0, 1.0, 4096, 10_000.0, 96),
    (2.0, 64.0, 0.5, 512, 1_000_000.0, 32),
]


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("factor, beta_fast, beta_slow, original, theta, dims", YARN_CASES)
def test_yarn_frequencies_and_attention_factor(factor, beta_fast, beta_slow, original, theta, dims, truncate):
    scaling = RopeScaling(
        "yarn", factor=factor, original_max_position=original, beta_fast=beta_fast, beta_slow=beta_slow, truncate=truncate
    )
    rope = RoPE(dims, theta, scaling)
    expected, mscale = yarn_reference(dims, theta, factor, original, beta_fast, beta_slow, truncate)
    np.testing.assert_allclose(rope.inverse_frequencies(), expected, rtol=1e-5)
    assert rope.attention_factor == pytest.approx(mscale)
    hf_inv_freq, hf_factor = hf_rope(
        "yarn", dims, theta, factor=factor, original_max_position_embeddings=original, beta_fast=beta_fast,
        beta_slow=beta_slow, truncate=truncate,
    )
    np.testing.assert_allclose(rope.inverse_frequencies(), hf_inv_freq, rtol=1e-5)
    assert rope.attention_factor == pytest.approx(hf_factor)


def test_the_position_config_reaches_the_scaling():
    yarn = build("rope", rope_scaling="yarn", scaling_factor=4.0, original_max_position=64, yarn_truncate=False)
    assert not yarn.rope(16).scaling.truncate
    dynamic = build("rope", rope_scaling="dynamic_ntk", scaling_factor=4.0, original_max_position=64, dynamic_length="batch")
    assert dynamic.rope(16).scaling.dynamic_length == "batch"
    longrope = build("rope", rope_scaling="longrope", original_max_position=64, short_factor=[1.0, 2.0], long_factor=[3.0, 4.0])
    assert (longrope.rope(4).scaling.short_factor, longrope.rope(4).scaling.long_factor) == ((1.0, 2.0), (3.0, 4.0))


def test_llama3_frequencies():
    scaling = RopeScaling("llama3", factor=8.0, original_max_position=8192, low_freq_factor=1.0, high_freq_factor=4.0)
    rope = RoPE(128, 500_000.0, scaling)
    np.testing.assert_allclose(rope.inverse_frequencies(), llama3_reference(128, 500_000.0, 8.0, 8192, 1.0, 4.0), rtol=1e-5)
    hf_inv_freq, _ = hf_rope(
        "llama3", 128, factor=8.0, original_max_position_embeddings=8192, low_freq_factor=1.0, high_freq_factor=4.0
    )
    np.testing.assert_allclose(rope.inverse_frequencies(), hf_inv_freq, rtol=1e-5)


@pytest.mark.parametrize("factor, original, dims", [(32.0, 4096, 96), (16.0, 8192, 64), (1.0, 4096, 32)])
def test_longrope_switches_factor_lists_at_the_original_context(factor, original, dims):
    """Phi-3's LongRoPE: against its formula and transformers' rope initialisation, below and past L0."""
    rng = np.random.default_rng(dims)
    short, long = tuple(rng.uniform(1.0, 2.0, dims // 2)), tuple(rng.uniform(1.0, 40.0, dims // 2))
    scaling = RopeScaling("longrope", factor=factor, original_max_position=original, short_factor=short, long_factor=long)
    rope = RoPE(dims, 10_000.0, scaling)
    plain = 1.0 / 10_000.0 ** (np.arange(0, dims, 2) / dims)
    for length, factors in [(original // 2, short), (original, short), (original + 1, long), (4 * original, long)]:
        np.testing.assert_allclose(rope.inverse_frequencies(jnp.asarray(length)), plain / np.asarray(factors), rtol=1e-6)
        hf_inv_freq, hf_factor = hf_rope(
            "longrope", dims, 10_000.0, max_position=int(factor * original), seq_len=length, short_factor=list(short),
            long_factor=list(long), original_max_position_embeddings=original,
        )
        np.testing.assert_allclose(rope.inverse_frequencies(jnp.asarray(length)), hf_inv_freq, rtol=1e-6)
        assert rope.attention_factor == pytest.approx(hf_factor)
    assert rope.attention_factor == pytest.approx(math.sqrt(1 + math.log(factor) / math.log(original)))
    x = jnp.asarray(rng.normal(size=(2, 3, 1, dims)), jnp.float32)  # a row past L0 rotates by the long factors
    rows = jnp.array([[0, 1, 2], [original - 1, original, original + 1]])
    rotated = rope(x, rows)
    for row, factors in [(0, short), (1, long)]:
        expected = apply_rope(x[row : row + 1], rows[row : row + 1], jnp.asarray(plain / np.asarray(factors), jnp.float32), rope.attention_factor)
        np.testing.assert_allclose(rotated[row : row + 1], expected, atol=2e-3)  # float32 angles near position 4096
    with pytest.raises(config.ConfigError, match="position.short_factor: longrope needs one short and one long factor per rotated pair: 16 each for 32 rotary dims, got 1"):
        config.ModelConfig.from_dict(dict(
            vocab_size=64, d_model=64, num_layers=1, num_heads=2, ffn_dim=128, max_seq_len=64,
            position=dict(rope_scaling="longrope", original_max_position=32, short_factor=[1.0], long_factor=[1.0]),
        ))
    with pytest.raises(ValueError, match="longrope needs short_factor and long_factor of 16 values each"):
        RoPE(32, scaling=RopeScaling("longrope", factor=2.0, original_max_position=64, short_factor=(1.0,), long_factor=(1.0,)))
