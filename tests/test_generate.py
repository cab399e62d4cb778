"""Generation: cached greedy decoding against the full forward, batching, EOS, stop strings, streaming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import models
from zoo.generate import Generator, bucket
from zoo.sampling import Sampler, SettingError


def make_generator(**overrides):
    from zoo import config

    sizes = dict(vocab_size=61, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48, max_seq_len=96)
    model = models.build(config.ModelConfig.from_dict({**sizes, **overrides}))
    return Generator(model, jax.jit(model.init)(jax.random.key(7)))


MAMBA2 = {"num_heads": 4, "head_dim": 8, "state_dim": 8, "scan_chunk": 4}
GATED_DELTANET = {"num_heads": 4, "num_key_heads": 2, "key_dim": 8, "value_dim": 8, "scan_chunk": 4}
HYBRID = {"attention": {"layer_pattern": ["mamba2", "global"]}, "mamba2": MAMBA2}


@pytest.fixture(scope="module", params=["attention", "mamba-2 hybrid"])
def generator(request):
    return make_generator(**({} if request.param == "attention" else HYBRID))


PROMPTS = [[5, 9, 12, 3], [7], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57]]
CACHE_KINDS = {
    "full": {},
    "mamba-2 hybrid": HYBRID,
    "rolling window": {"attention": {"layer_pattern": ["local", "global"], "window": 4}},
    "mla latent": {"attention": {"kind": "mla", "kv_lora_rank": 12, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}},
    "mamba-2 alone (no feed-forward, no positions)": {
        "ffn_dim": 0, "position": {"kind": "none"}, "attention": {"layer_pattern": ["mamba2"]}, "mamba2": MAMBA2,
    },
    "gated deltanet and attention, moe": {  # Qwen3-Next's layout, shortened
        "num_layers": 4, "attention": {"layer_pattern": ["gated_deltanet"] * 3 + ["global"]}, "gated_deltanet": GATED_DELTANET,
        "moe": {"num_experts": 4, "top_k": 2, "expert_ffn_dim": 16, "shared_ffn_dim": 8, "shared_gate": True},
    },
    # rows of 4 and 1 tokens pass L0 = 8 while decoding (the cache is rebuilt), the third starts past it
    "longrope crossing its original context": {
        "position": {
            "rope_scaling": "longrope", "scaling_factor": 4.0, "original_max_position": 8,
            "short_factor": [1.0, 1.5, 2.0, 3.0], "long_factor": [2.0, 9.0, 30.0, 80.0],
        }
    },
}


@pytest.mark.parametrize("kind", CACHE_KINDS)
def test_greedy_with_cache_is_argmax_of_the_full_forward(kind):
    generator = make_generator(**CACHE_KINDS[kind])
    results = generator(PROMPTS, max_new_tokens=12, sampler=Sampler(temperature=0))
    apply = jax.jit(generator.model.apply)

    def next_token(sequence):  # argmax after the sequence, from a full forward (right-padded to one shape)
        tokens = np.zeros((1, 32), np.int32)
        tokens[0, : len(sequence)] = sequence
        segment_ids = (np.arange(32) < len(sequence)).astype(np.int32)[None]
        logits = apply(generator.params, tokens, segment_ids=segment_ids).logits
        return int(jnp.argmax(logits[0, len(sequence) - 1]))

    for prompt, result in zip(PROMPTS, results):
        assert len(result.tokens) == 12 and result.finish_reason == "length"
        sequence = list(prompt)
        for token in result.tokens:  # each new token is the argmax after everything before it
            assert next_token(sequence) == token
            sequence.append(token)


@pytest.mark.parametrize("sampler", [Sampler(temperature=0), Sampler(temperature=1.3, top_k=20, top_p=0.9), Sampler(min_p=0.05)])
def test_batched_equals_one_by_one(generator, sampler):
    batched = generator(PROMPTS, max_new_tokens=10, sampler=sampler, seed=3, eos_ids=[11])
    for prompt, result in zip(PROMPTS, batched):
        assert generator([prompt], max_new_tokens=10, sampler=sampler, seed=3, eos_ids=[11])[0] == result


def test_seed_makes_sampling_reproducible(generator):
    first = generator(PROMPTS, max_new_tokens=10, seed=1)
    assert generator(PROMPTS, max_new_tokens=10, seed=1) == first
    assert generator(PROMPTS, max_new_tokens=10, seed=2) != first


def test_eos_ids_stop_each_sequence_on_its_own(generator):
    free = generator(PROMPTS, max_new_tokens=10, sampler=Sampler(temperature=0))
    eos_ids = [free[0].tokens[3], free[2].tokens[2]]  # the first prompt's fourth token, the last one's third
    stopped = generator(PROMPTS, max_new_tokens=10, sampler=Sampler(temperature=0), eos_ids=eos_ids)
    for before, after in zip(free, stopped):
        ends = [i for i, token in enumerate(before.tokens) if token in eos_ids]
        if ends:  # cut at the first of any EOS id
            assert after.tokens == before.tokens[: ends[0]] and after.finish_reason == "eos"
        else:
            assert after == before
    assert stopped[0].finish_reason == stopped[2].finish_reason == "eos"


class Pieces:
    """A tokenizer whose token i reads "<i>", so text positions inside tokens are easy to name."""

    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_streamed_text_adds_up_to_the_text(generator):
    pieces = []
    results = generator(PROMPTS, max_new_tokens=20, tokenizer=Pieces(), on_text=pieces.append, stream_every=4, seed=5)
    assert len(pieces) == 5
    for row, result in enumerate(results):
        assert "".join(piece[row] for piece in pieces) == result.text == Pieces().decode(result.tokens)
    plain = generator(PROMPTS, max_new_tokens=20, seed=5)
    assert [r.tokens for r in results] == [r.tokens for r in plain]  # chunking does not change the tokens


def test_lengths_share_compiled_programs(generator):
    generator([[1, 2, 3]], max_new_tokens=5)
    compiled = generator._decode._cache_size(), generator._prefill._cache_size()
    generator([[1, 2, 3, 4, 5, 6, 7, 8, 9]], max_new_tokens=13)  # same buckets (16, 16)
    assert (generator._decode._cache_size(), generator._prefill._cache_size()) == compiled
    assert bucket(1) == 16 and bucket(17) == 32 and bucket(64) == 64


def stops_in(tokens):
    """Two stop strings from a row's tokens: one begins inside the fifth token's "<i>" and ends
    in the sixth's, one begins inside the eighth's and ends with it."""
    fifth, sixth, eighth = tokens[4], tokens[5], tokens[7]
    return [f"{fifth}><{str(sixth)[0]}", f"{str(eighth)[-1]}>"]


@pytest.mark.parametrize("rows", [[0], [0, 1, 2]], ids=["one prompt", "a batch"])
def test_stop_strings_end_text_tokens_and_stream_alike(generator, rows):
    prompts = [PROMPTS[row] for row in rows]
    greedy = dict(max_new_tokens=12, sampler=Sampler(temperature=0), tokenizer=Pieces())
    free = generator(prompts, **greedy)
    sources = free if len(rows) == 1 else [free[0], free[2]]
    stops = [stop for result in sources for stop in stops_in(result.tokens)]
    pieces = []
    cut = generator(prompts, **greedy, stop_strings=stops, on_text=pieces.append, stream_every=3)
    for row, (before, after) in enumerate(zip(free, cut)):
        found = [before.text.find(s) for s in stops if s in before.text]
        text = before.text[: min(found)] if found else before.text
        assert after.text == text and after.finish_reason == ("stop" if found else "length")
        assert after.tokens == before.tokens[: text.count(">")]  # those whose "<i>" lies wholly before
        assert "".join(piece[row] for piece in pieces) == after.text
    assert cut[0].finish_reason == "stop" and not cut[0].text.endswith(">")  # the stop began inside a token


@pytest.mark.parametrize(
    "prompts, max_new_tokens, message",
    [
        ([], 5, "no prompts given"),
        ([[1, 2], []], 5, "prompt 1 is empty; give at least one token"),
        ([[1, 61]], 5, "prompt 0 holds token 61, outside the vocabulary of 61"),
        ([[1] * 90], 10, "prompt 0 has 90 tokens; with max_new_tokens=10 that is 100, beyond the model's context of 96 tokens"),
    ],
)
def test_bad_requests(generator, prompts, max_new_tokens, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
        generator(prompts, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1, got 0"),
        (dict(seed=-1), "seed must be an integer in [0, 4294967295] (2**32 - 1), got -1"),
        (dict(seed=2**70), f"seed must be an integer in [0, 4294967295] (2**32 - 1), got {2**70}"),
        (dict(eos_ids=[2, 61]), "eos_ids must be ids in [0, 61) (the vocabulary), got 61"),
        (dict(stop_strings=["x", ""], tokenizer=Pieces()), "stop_strings must be non-empty text (an empty one would stop at once), got ''"),
        (dict(stop_strings="x", tokenizer=Pieces()), "stop_strings must be a sequence of strings, got the string 'x'"),
        (dict(stop_strings=["x"]), "stop_strings needs a tokenizer to read the generated text, and none was given"),
        (dict(on_text=print), "on_text needs a tokenizer to read the generated text, and none was given"),
    ],
)
def test_bad_settings(generator, settings, message):
    with pytest.raises(SettingError) as error:
        generator([[1]], **{"max_new_tokens": 3, **settings})
    assert str(error.value) == message
