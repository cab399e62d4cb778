"""Generation: cached greedy decoding against the full forward, batching, samplers, stopping, streaming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import models
from zoo.generate import Generator, bucket
from zoo.sampling import Sampler, filtered_log_probs, sample


def make_generator(**overrides):
    from zoo import config

    sizes = dict(vocab_size=61, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48, max_seq_len=96)
    model = models.build(config.ModelConfig.from_dict({**sizes, **overrides}))
    return Generator(model, jax.jit(model.init)(jax.random.key(7)))


@pytest.fixture(scope="module")
def generator():
    return make_generator()


PROMPTS = [[5, 9, 12, 3], [7], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57]]
CACHE_KINDS = {
    "rolling window": {"attention": {"layer_pattern": ["local", "global"], "window": 4}},
    "mla latent": {"attention": {"kind": "mla", "kv_lora_rank": 12, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}},
}


@pytest.mark.parametrize("kind", ["full", *CACHE_KINDS])
def test_greedy_with_cache_is_argmax_of_the_full_forward(kind, generator):
    generator = generator if kind == "full" else make_generator(**CACHE_KINDS[kind])
    results = generator(PROMPTS, max_new_tokens=12, sampler=Sampler(temperature=0))
    apply = jax.jit(generator.model.apply)

    def next_token(sequence):  # argmax after the sequence, from a full forward (right-padded to one shape)
        tokens = np.zeros((1, 32), np.int32)
        tokens[0, : len(sequence)] = sequence
        segment_ids = (np.arange(32) < len(sequence)).astype(np.int32)[None]
        logits, _ = apply(generator.params, tokens, segment_ids=segment_ids)
        return int(jnp.argmax(logits[0, len(sequence) - 1]))

    for prompt, result in zip(PROMPTS, results):
        assert len(result.tokens) == 12 and result.finish_reason == "length"
        sequence = list(prompt)
        for token in result.tokens:  # each new token is the argmax after everything before it
            assert next_token(sequence) == token
            sequence.append(token)


@pytest.mark.parametrize("sampler", [Sampler(temperature=0), Sampler(temperature=1.3, top_k=20, top_p=0.9), Sampler(min_p=0.05)])
def test_batched_equals_one_by_one(generator, sampler):
    batched = generator(PROMPTS, max_new_tokens=10, sampler=sampler, seed=3, eos_id=11)
    for prompt, result in zip(PROMPTS, batched):
        assert generator([prompt], max_new_tokens=10, sampler=sampler, seed=3, eos_id=11)[0] == result


def test_seed_makes_sampling_reproducible(generator):
    first = generator(PROMPTS, max_new_tokens=10, seed=1)
    assert generator(PROMPTS, max_new_tokens=10, seed=1) == first
    assert generator(PROMPTS, max_new_tokens=10, seed=2) != first


def test_eos_stops_each_sequence_on_its_own(generator):
    free = generator(PROMPTS, max_new_tokens=10, sampler=Sampler(temperature=0))
    eos = free[0].tokens[3]  # the first prompt's fourth token
    stopped = generator(PROMPTS, max_new_tokens=10, sampler=Sampler(temperature=0), eos_id=eos)
    assert stopped[0].tokens == free[0].tokens[: free[0].tokens.index(eos)] and stopped[0].finish_reason == "eos"
    for before, after in zip(free[1:], stopped[1:]):
        if eos not in before.tokens:
            assert after == before


def test_streaming_delivers_every_token_in_order(generator):
    chunks = []
    results = generator(PROMPTS, max_new_tokens=20, on_tokens=chunks.append, stream_every=4, seed=5)
    assert len(chunks) == 5
    for row, result in enumerate(results):
        assert [t for chunk in chunks for t in chunk[row]] == result.tokens
    assert results == generator(PROMPTS, max_new_tokens=20, seed=5)  # chunking does not change the tokens


def test_lengths_share_compiled_programs(generator):
    generator([[1, 2, 3]], max_new_tokens=5)
    compiled = generator._decode._cache_size(), generator._prefill._cache_size()
    generator([[1, 2, 3, 4, 5, 6, 7, 8, 9]], max_new_tokens=13)  # same buckets (16, 16)
    assert (generator._decode._cache_size(), generator._prefill._cache_size()) == compiled
    assert bucket(1) == 16 and bucket(17) == 32 and bucket(64) == 64


def test_stop_strings_cut_the_text(generator):
    class Digits:  # a tokenizer whose text is the token ids, for a readable stop string
        def decode(self, ids):
            return " ".join(str(i) for i in ids)

    free = generator([PROMPTS[0]], max_new_tokens=10, sampler=Sampler(temperature=0), tokenizer=Digits())[0]
    stop = f"{free.tokens[4]} {free.tokens[5]}"
    cut = generator([PROMPTS[0]], max_new_tokens=10, sampler=Sampler(temperature=0), tokenizer=Digits(), stop_strings=[stop])[0]
    assert cut.finish_reason == "stop" and cut.tokens == free.tokens[:6]
    assert cut.text == free.text[: free.text.index(stop)]


@pytest.mark.parametrize(
    "prompts, max_new_tokens, message",
    [
        ([], 5, "no prompts given"),
        ([[1, 2], []], 5, "prompt 1 is empty; give at least one token"),
        ([[1, 61]], 5, "prompt 0 holds token 61, outside the vocabulary of 61"),
        ([[1] * 90], 10, "prompt 0 has 90 tokens; with max_new_tokens=10 that is 100, beyond the model's context of 96 tokens"),
        ([[1]], 0, "max_new_tokens must be >= 1, got 0"),
    ],
)
def test_bad_requests(generator, prompts, max_new_tokens, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
        generator(prompts, max_new_tokens=max_new_tokens)


def test_stop_strings_need_a_tokenizer(generator):
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        generator([[1]], max_new_tokens=3, stop_strings=["x"])


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(temperature=-0.5), "temperature must be >= 0 \\(0 is greedy\\), got -0.5"),
        (dict(top_p=0.0), "top_p must be in \\(0, 1\\], got 0.0"),
        (dict(top_p=1.5), "top_p must be in \\(0, 1\\], got 1.5"),
        (dict(top_k=0), "top_k must be >= 1, got 0"),
        (dict(min_p=2.0), "min_p must be in \\[0, 1\\], got 2.0"),
    ],
)
def test_bad_samplers(fields, message):
    with pytest.raises(ValueError, match=message):
        Sampler(**fields)


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
