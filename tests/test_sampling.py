"""Samplers: validation, the distributions they sample, and the same kept tokens as transformers' warpers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from zoo.sampling import Sampler, SettingError, filtered_log_probs, sample


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(temperature=-0.5), "temperature must be a finite number >= 0 (0 is greedy), got -0.5"),
        (dict(temperature=math.nan), "temperature must be a finite number >= 0 (0 is greedy), got nan"),
        (dict(temperature=math.inf), "temperature must be a finite number >= 0 (0 is greedy), got inf"),
        (dict(top_p=0.0), "top_p must be in (0, 1] (1 keeps every token), got 0.0"),
        (dict(top_p=1.5), "top_p must be in (0, 1] (1 keeps every token), got 1.5"),
        (dict(top_p=math.nan), "top_p must be in (0, 1] (1 keeps every token), got nan"),
        (dict(top_k=-1), "top_k must be an integer >= 0 (0 is off), got -1"),
        (dict(top_k=2.5), "top_k must be an integer >= 0 (0 is off), got 2.5"),
        (dict(min_p=1.0), "min_p must be in [0, 1) (0 keeps every token), got 1.0"),
        (dict(min_p=-0.1), "min_p must be in [0, 1) (0 keeps every token), got -0.1"),
        (dict(min_p=math.nan), "min_p must be in [0, 1) (0 keeps every token), got nan"),
    ],
)
def test_bad_samplers(fields, message):
    with pytest.raises(SettingError) as error:
        Sampler(**fields)
    assert str(error.value) == message and error.value.name == next(iter(fields))


def test_top_k_zero_is_off():
    assert Sampler(top_k=0) == Sampler() and Sampler(top_k=0).top_k is None


# --------------------------------------------------------------------------- kept tokens, as transformers keeps them


def transformers_kept(logits, sampler):
    """The tokens transformers' warpers keep, applied in generate()'s order after the temperature."""
    scores = torch.from_numpy(logits) / sampler.temperature
    warpers = []
    if sampler.top_k is not None:
        warpers.append(TopKLogitsWarper(sampler.top_k))
    if sampler.top_p is not None:
        warpers.append(TopPLogitsWarper(sampler.top_p))
    if sampler.min_p is not None:
        warpers.append(MinPLogitsWarper(sampler.min_p))
    for warper in warpers:
        scores = warper(None, scores)
    return np.isfinite(scores.numpy())


def cut_points(logits, top_p_row=0):
    """top_p values just above and below the mass of the likeliest 1, 2, 3 tokens of a row."""
    p = np.exp(logits[top_p_row] - logits[top_p_row].max())
    mass = np.cumsum(np.sort(p / p.sum())[::-1])
    return [float(m + d) for m in mass[:3] for d in (-1e-4, 1e-4) if 0 < m + d < 1]


SHAPES = [(1, 7), (3, 61), (4, 400), (2, 5000)]


@pytest.mark.parametrize("shape", SHAPES)
def test_kept_tokens_are_those_transformers_keeps(shape):
    logits = (np.random.default_rng(shape[1]).normal(size=shape) * 3).astype(np.float32)
    samplers = [Sampler(top_p=p) for p in (1.0, 0.999999, 0.99, 0.9, 0.5, 0.1, *cut_points(logits))]
    samplers += [Sampler(top_k=k) for k in (1, 3, shape[1] - 1, shape[1], shape[1] + 5)]
    samplers += [Sampler(min_p=m) for m in (0.0, 1e-4, 0.05, 0.5, 0.99)]
    samplers += [Sampler(temperature=0.7, top_k=5, top_p=0.8, min_p=0.1), Sampler(temperature=1.6, top_k=50, top_p=1.0)]
    for sampler in samplers:
        kept = np.isfinite(np.asarray(filtered_log_probs(jnp.asarray(logits), sampler)))
        np.testing.assert_array_equal(kept, transformers_kept(logits, sampler), err_msg=str(sampler))


def test_top_p_one_keeps_every_token():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4096)).astype(np.float32) * 3)
    assert bool(jnp.all(jnp.isfinite(filtered_log_probs(logits, Sampler(top_p=1.0)))))


def test_top_k_beyond_the_vocabulary_is_no_filter():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 61)).astype(np.float32))
    np.testing.assert_array_equal(filtered_log_probs(logits, Sampler(top_k=1000)), filtered_log_probs(logits, Sampler()))


def test_each_row_is_filtered_on_its_own():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(5, 400)).astype(np.float32) * 2)
    sampler = Sampler(temperature=0.9, top_k=40, top_p=0.9, min_p=0.02)
    batched = filtered_log_probs(logits, sampler)
    for row in range(5):
        np.testing.assert_array_equal(batched[row], filtered_log_probs(logits[row : row + 1], sampler)[0])


# --------------------------------------------------------------------------- sampler statistics


def reference_distribution(logits, temperature=1.0, top_k=None, top_p=None, min_p=None):
    """The distribution each sampler defines, written out in numpy."""
    p = np.exp((logits - logits.max()) / temperature)
    p /= p.sum()
    if top_k is not None:
        p = np.where(p >= np.sort(p)[-top_k], p, 0.0)
        p /= p.sum()
    if top_p is not None:
        order = np.argsort(-p)
        mass_before = np.cumsum(p[order]) - p[order]
        keep = np.zeros_like(p, bool)
        keep[order[mass_before < top_p]] = True
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    if min_p is not None:
        p = np.where(p >= min_p * p.max(), p, 0.0)
        p /= p.sum()
    return p


@pytest.mark.parametrize(
    "sampler",
    [
        Sampler(),
        Sampler(temperature=0.5),
        Sampler(top_k=4),
        Sampler(top_p=0.7),
        Sampler(min_p=0.2),
        Sampler(temperature=1.5, top_k=6, top_p=0.8, min_p=0.1),
    ],
)
def test_sampling_frequencies_match_the_filtered_distribution(sampler):
    logits = np.random.default_rng(0).normal(size=10).astype(np.float32) * 1.5
    expected = reference_distribution(logits.astype(np.float64), sampler.temperature, sampler.top_k, sampler.top_p, sampler.min_p)
    np.testing.assert_allclose(np.exp(filtered_log_probs(jnp.asarray(logits)[None], sampler)[0]), expected, atol=1e-6)
    draws = 40_000
    keys = jax.random.split(jax.random.key(1234), draws)
    tokens = jax.jit(jax.vmap(lambda key: sample(key, jnp.asarray(logits)[None], sampler)[0]))(keys)
    frequencies = np.bincount(np.asarray(tokens), minlength=10) / draws
    assert np.all(frequencies[expected == 0] == 0)  # filtered tokens are never drawn
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(frequencies - expected) <= 5 * sigma + 1e-9), (frequencies, expected)


def test_greedy_ignores_the_filters():
    logits = jnp.asarray([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0]])
    np.testing.assert_array_equal(sample(jax.random.key(0), logits, Sampler(temperature=0, top_k=1, top_p=0.1)), [1, 0])
