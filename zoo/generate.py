"""Autoregressive generation with a KV cache: one prefill pass, then a compiled decode loop.

The decode loop is a `jax.lax.while_loop` that samples a token, feeds it back through
the model with the cache, and stops per row on an EOS id or at max_new_tokens, with no
Python work per token. Prompt lengths and max_new_tokens are rounded up to buckets so a
new length rarely means a new compile. With streaming or stop strings the loop runs in
chunks of `stream_every` tokens and the host reads the text between chunks.

A LongRoPE model rotates by its short factors up to its original context L0 and by its long
factors beyond: when a row's length first passes L0, every key it has cached was rotated
with the wrong factors, so the loop pauses and the whole batch is prefilled again from its
tokens so far (as transformers' Phi-3 does). Cached decoding then equals the full forward.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.config import ModelConfig
from zoo.models import Model
from zoo.sampling import Sampler, SettingError, sample
from zoo.stopping import RowTexts
from zoo.tokenizer import Tokenizer

OnText = Callable[[list[str]], None]  # receives each prompt's text that became final since the last call
OnTokens = Callable[[list[int]], None]  # receives each prompt's count of new tokens so far
MAX_SEED = 2**32 - 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    """The decode loop's carry for B rows and a budget of N new tokens: the cache, the next
    logits [B, V], the tokens so far [B, N] (0 past each row's count), count [B], eos and
    done [B] (a row that hit EOS, and one that stops), and the step []."""

    cache: Any
    logits: jax.Array
    tokens: jax.Array
    count: jax.Array
    eos: jax.Array
    done: jax.Array
    step: jax.Array

    @classmethod
    def start(cls, cache, logits: jax.Array, budget: int) -> "DecodeState":
        """The state before the first new token: `logits` [B, V] follow each prompt."""
        batch = logits.shape[0]
        tokens, count = jnp.zeros((batch, budget), jnp.int32), jnp.zeros((batch,), jnp.int32)
        eos, done = jnp.zeros((batch,), bool), jnp.zeros((batch,), bool)  # two buffers: the loop donates each
        return cls(cache, logits, tokens, count, eos, done, jnp.zeros((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class Generated:
    """One prompt's continuation: the new tokens (no EOS), why it ended, and its text if a tokenizer was given.

    With a stop string, `text` ends just before it and `tokens` are those whose text lies
    wholly before it.
    """

    tokens: list[int]
    finish_reason: str  # "eos", "stop" (a stop string appeared) or "length"
    text: str | None = None


def bucket(length: int, smallest: int = 16) -> int:
    """The power of two >= length (at least `smallest`) that a length is padded to."""
    return max(smallest, 1 << (length - 1).bit_length())


def rebuild_lengths(config: ModelConfig) -> tuple[int, ...]:
    """The lengths L0 past which a cache must be rebuilt: each LongRoPE original context (the
    global layers' and the local layers' RoPE), where the frequencies of every position change."""
    ropes = [config.position, config.position.local]
    return tuple(sorted({r.original_max_position for r in ropes if r is not None and r.rope_scaling == "longrope"}))


def rebuild_steps(prompts: Sequence[Sequence[int]], max_new_tokens: int, lengths: Sequence[int]) -> list[int]:
    """The decode steps after which the cache is rebuilt: a row of P prompt tokens passes L0
    when step L0 - P feeds its token (length L0 + 1), so the logits for the next step come
    from a prefill of all L0 + 1 tokens. Sorted, each in [1, max_new_tokens)."""
    steps = {length - len(p) + 1 for p in prompts for length in lengths if len(p) <= length}
    return sorted(s for s in steps if 1 <= s < max_new_tokens)


class Generator:
    """Generation for one model and its params; compiled programs are reused across calls.

    `generator(prompts, max_new_tokens=..., sampler=..., seed=..., eos_ids=...)` returns a
    Generated per prompt. A prompt's tokens depend only on the prompt, sampler and seed,
    not on the other prompts in the batch. With a tokenizer, `on_text` is called between
    decode chunks with each prompt's newly final text; a prompt's pieces add up to its
    `text`. `on_tokens` is called after each decode chunk, once its tokens are on the
    host, with each prompt's count of new tokens so far; with it the first chunk is a
    single step, so its first call marks every prompt's first token (a timing hook).
    """

    def __init__(self, model: Model, params: nnx.State):
        self.model, self.params = model, params
        self._prefill = jax.jit(self._prefill_step, static_argnames=("cache_length",))
        self._decode = jax.jit(self._decode_steps, static_argnames=("sampler", "eos_ids"), donate_argnums=(1,))

    def _prefill_step(self, params, tokens, segment_ids, encoder=None, *, cache_length):
        """Right-padded prompts [B, P] (and an encoder-decoder's encoder tokens and segments) ->
        (logits [B, V] after each prompt's last token, cache)."""
        module = self.model.bind(params)
        cache = self.model.init_cache(tokens.shape[0], cache_length)
        inputs = {} if encoder is None else {"encoder_tokens": encoder[0], "encoder_segment_ids": encoder[1]}
        features = module.features(tokens, segment_ids=segment_ids, cache=cache, **inputs)
        last = jnp.sum(segment_ids != 0, axis=1) - 1
        return module.logits(jnp.take_along_axis(features.hidden, last[:, None, None], axis=1))[:, 0], features.cache

    def _decode_steps(self, params, state: DecodeState, limit, key, *, sampler: Sampler, eos_ids: tuple[int, ...]):
        """Samples and feeds back tokens until step == limit or every row is done."""

        def running(s: DecodeState):
            return (s.step < limit) & ~jnp.all(s.done)

        def step(s: DecodeState):
            token = sample(jax.random.fold_in(key, s.step), s.logits, sampler)
            is_eos = jnp.isin(token, jnp.asarray(eos_ids, jnp.int32)) if eos_ids else jnp.zeros_like(s.done)
            hit_eos = ~s.done & is_eos
            produced = ~s.done & ~hit_eos
            out = self.model.apply(params, token[:, None], cache=s.cache)
            return DecodeState(
                cache=out.cache,
                logits=out.logits[:, 0],
                tokens=s.tokens.at[:, s.step].set(jnp.where(produced, token, 0)),
                count=s.count + produced,
                eos=s.eos | hit_eos,
                done=s.done | hit_eos,
                step=s.step + 1,
            )

        return jax.lax.while_loop(running, step, state)

    def _rebuilt(self, state: DecodeState, prompts, encoder, *, cache_length: int) -> DecodeState:
        """The state with its cache and next logits from a fresh prefill of each row's prompt
        and new tokens so far (a row past L0 of a LongRoPE model: see the module docstring)."""
        generated, counts = jax.device_get((state.tokens, state.count))
        sequences = [list(p) + generated[row, : counts[row]].tolist() for row, p in enumerate(prompts)]
        tokens, segment_ids = right_padded(sequences, at_most=cache_length)
        logits, cache = self._prefill(self.params, tokens, segment_ids, encoder, cache_length=cache_length)
        return dataclasses.replace(state, cache=cache, logits=logits)

    def check(self, prompts, max_new_tokens: int, encoder_prompts=None) -> None:
        """Raises ValueError for prompts or lengths this model cannot generate from."""
        config = self.model.config
        if config.kind == "encoder":
            raise ValueError("encoder-only models do not generate; use a decoder or encoder_decoder kind")
        if (config.kind == "encoder_decoder") != (encoder_prompts is not None):
            need = "needs encoder prompts" if encoder_prompts is None else "takes no encoder prompts"
            raise ValueError(f"this {config.kind} model {need}")
        if not prompts:
            raise ValueError("no prompts given")
        if not (isinstance(max_new_tokens, numbers.Integral) and max_new_tokens >= 1):
            raise SettingError("max_new_tokens", f"must be an integer >= 1, got {max_new_tokens}")
        if encoder_prompts is not None:
            if len(encoder_prompts) != len(prompts):
                raise ValueError(f"{len(encoder_prompts)} encoder prompts for {len(prompts)} prompts; give one each")
            self._check_tokens(encoder_prompts, "encoder prompt", room=0)
        self._check_tokens(prompts, "prompt", room=max_new_tokens)

    def _check_tokens(self, prompts, name: str, room: int) -> None:
        config = self.model.config
        for index, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"{name} {index} is empty; give at least one token")
            bad = [t for t in prompt if not 0 <= t < config.vocab_size]
            if bad:
                raise ValueError(f"{name} {index} holds token {bad[0]}, outside the vocabulary of {config.vocab_size}")
            if len(prompt) + room > config.max_seq_len:
                extra = f"; with max_new_tokens={room} that is {len(prompt) + room}" if room else ""
                raise ValueError(
                    f"{name} {index} has {len(prompt)} tokens{extra}, beyond the model's context of "
                    f"{config.max_seq_len} tokens"
                )

    def _check_settings(self, seed, eos_ids, stop_strings, tokenizer, on_text) -> None:
        """Raises SettingError for a seed, EOS ids, stop strings or callback that cannot be used."""
        vocab = self.model.config.vocab_size
        if not (isinstance(seed, numbers.Integral) and 0 <= seed <= MAX_SEED):
            raise SettingError("seed", f"must be an integer in [0, {MAX_SEED}] (2**32 - 1), got {seed}")
        bad = [i for i in eos_ids if not (isinstance(i, numbers.Integral) and 0 <= i < vocab)]
        if bad:
            raise SettingError("eos_ids", f"must be ids in [0, {vocab}) (the vocabulary), got {bad[0]}")
        if isinstance(stop_strings, str):
            raise SettingError("stop_strings", f"must be a sequence of strings, got the string {stop_strings!r}")
        if "" in stop_strings:
            raise SettingError("stop_strings", "must be non-empty text (an empty one would stop at once), got ''")
        if tokenizer is None and (stop_strings or on_text is not None):
            name = "stop_strings" if stop_strings else "on_text"
            raise SettingError(name, "needs a tokenizer to read the generated text, and none was given")

    def __call__(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        encoder_prompts: Sequence[Sequence[int]] | None = None,
        sampler: Sampler = Sampler(),
        seed: int = 0,
        eos_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
        tokenizer: Tokenizer | None = None,
        on_text: OnText | None = None,
        on_tokens: OnTokens | None = None,
        stream_every: int = 8,
    ) -> list[Generated]:
        self._check_settings(seed, eos_ids, stop_strings, tokenizer, on_text)
        self.check(prompts, max_new_tokens, encoder_prompts)
        eos_ids = tuple(int(i) for i in eos_ids)  # hashable: the decode loop is compiled for them
        batch, budget = len(prompts), bucket(max_new_tokens)
        tokens, segment_ids = right_padded(prompts)
        encoder = None if encoder_prompts is None else right_padded(encoder_prompts)
        logits, cache = self._prefill(self.params, tokens, segment_ids, encoder, cache_length=tokens.shape[1] + budget)
        state = DecodeState.start(cache, logits, budget)
        chunk = stream_every if (on_text or stop_strings) else max_new_tokens
        key = jax.random.key(int(seed))
        texts = None if tokenizer is None else RowTexts(tokenizer, stop_strings, batch)
        first = 1 if on_tokens is not None else chunk  # the limit is traced: a first chunk of 1 compiles nothing new
        rebuilds = rebuild_steps(prompts, max_new_tokens, rebuild_lengths(self.model.config))
        while True:
            step = int(state.step)
            limit = min([step + (chunk if step else first), max_new_tokens] + [r for r in rebuilds if r > step])
            state = self._decode(self.params, state, jnp.int32(limit), key, sampler=sampler, eos_ids=eos_ids)
            if limit in rebuilds:
                state = self._rebuilt(state, prompts, encoder, cache_length=tokens.shape[1] + budget)
            generated, counts, done = jax.device_get((state.tokens, state.count, state.done))
            if on_tokens is not None:
                on_tokens(counts.tolist())
            rows = [generated[row, : counts[row]].tolist() for row in range(batch)]
            last = limit >= max_new_tokens
            if texts is not None:
                pieces = [texts.update(row, rows[row], ended=last or bool(done[row])) for row in range(batch)]
                if on_text is not None:
                    on_text(pieces)
                done = done | texts.stopped
            if done.all() or last:
                break
            if texts is not None and texts.stopped.any():
                state = dataclasses.replace(state, done=jnp.asarray(done))
        eos = jax.device_get(state.eos)
        if texts is None:
            return [Generated(rows[row], "eos" if eos[row] else "length") for row in range(batch)]
        reasons = ["stop" if texts.stopped[row] else "eos" if eos[row] else "length" for row in range(batch)]
        return [Generated(texts.tokens[row], reasons[row], texts.texts[row]) for row in range(batch)]


def right_padded(prompts: Sequence[Sequence[int]], at_most: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, segment_ids) [B, bucket(longest)], or at most `at_most` wide: each prompt then
    zeros, segment 1 then 0."""
    width = bucket(max(len(p) for p in prompts))
    tokens = np.zeros((len(prompts), width if at_most is None else min(width, at_most)), np.int32)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = prompt
    lengths = np.array([[len(p)] for p in prompts])
    return tokens, (np.arange(tokens.shape[1]) < lengths).astype(np.int32)
