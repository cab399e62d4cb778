"""Autoregressive generation with a KV cache: one prefill pass, then a compiled decode loop.

The decode loop is a `jax.lax.while_loop` that samples a token, feeds it back through
the model with the cache, and stops per row on EOS or at max_new_tokens, with no Python
work per token. Prompt lengths and max_new_tokens are rounded up to buckets so a new
length rarely means a new compile. With streaming or stop strings the loop runs in
chunks of `stream_every` tokens and the host looks at the tokens between chunks.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.models import Model
from zoo.sampling import Sampler, sample
from zoo.tokenizer import Tokenizer

OnTokens = Callable[[list[list[int]]], None]  # receives each prompt's new tokens since the last call


@dataclasses.dataclass(frozen=True)
class Generated:
    """One prompt's continuation: the new tokens (no EOS), why it ended, and its text if a tokenizer was given."""

    tokens: list[int]
    finish_reason: str  # "eos", "stop" (a stop string appeared) or "length"
    text: str | None = None


def bucket(length: int, smallest: int = 16) -> int:
    """The power of two >= length (at least `smallest`) that a length is padded to."""
    return max(smallest, 1 << (length - 1).bit_length())


class Generator:
    """Generation for one model and its params; compiled programs are reused across calls.

    `generator(prompts, max_new_tokens=..., sampler=..., seed=..., eos_id=...)` returns a
    Generated per prompt. A prompt's tokens depend only on the prompt, sampler and seed,
    not on the other prompts in the batch.
    """

    def __init__(self, model: Model, params: nnx.State):
        self.model, self.params = model, params
        self._prefill = jax.jit(self._prefill_step, static_argnames=("cache_length",))
        self._decode = jax.jit(self._decode_steps, static_argnames=("sampler", "eos_id"), donate_argnums=(1,))

    def _prefill_step(self, params, tokens, segment_ids, encoder=None, *, cache_length):
        """Right-padded prompts [B, P] (and an encoder-decoder's encoder tokens and segments) ->
        (logits [B, V] after each prompt's last token, cache)."""
        module = self.model.bind(params)
        cache = self.model.init_cache(tokens.shape[0], cache_length)
        inputs = {} if encoder is None else {"encoder_tokens": encoder[0], "encoder_segment_ids": encoder[1]}
        hidden, cache, _ = module.features(tokens, segment_ids=segment_ids, cache=cache, **inputs)
        last = jnp.sum(segment_ids != 0, axis=1) - 1
        return module.logits(jnp.take_along_axis(hidden, last[:, None, None], axis=1))[:, 0], cache

    def _decode_steps(self, params, state, limit, key, *, sampler: Sampler, eos_id: int | None):
        """Samples and feeds back tokens until step == limit or every row is done."""

        def running(s):
            return (s["step"] < limit) & ~jnp.all(s["done"])

        def step(s):
            token = sample(jax.random.fold_in(key, s["step"]), s["logits"], sampler)
            hit_eos = ~s["done"] & (token == eos_id) if eos_id is not None else jnp.zeros_like(s["done"])
            produced = ~s["done"] & ~hit_eos
            logits, cache = self.model.apply(params, token[:, None], cache=s["cache"])
            return {
                "cache": cache,
                "logits": logits[:, 0],
                "tokens": s["tokens"].at[:, s["step"]].set(jnp.where(produced, token, 0)),
                "count": s["count"] + produced,
                "eos": s["eos"] | hit_eos,
                "done": s["done"] | hit_eos,
                "step": s["step"] + 1,
            }

        return jax.lax.while_loop(running, step, state)

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
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
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

    def __call__(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        encoder_prompts: Sequence[Sequence[int]] | None = None,
        sampler: Sampler = Sampler(),
        seed: int = 0,
        eos_id: int | None = None,
        stop_strings: Sequence[str] = (),
        tokenizer: Tokenizer | None = None,
        on_tokens: OnTokens | None = None,
        stream_every: int = 8,
    ) -> list[Generated]:
        self.check(prompts, max_new_tokens, encoder_prompts)
        if stop_strings and tokenizer is None:
            raise ValueError("stop strings need a tokenizer to read the generated text")
        batch, budget = len(prompts), bucket(max_new_tokens)
        tokens, segment_ids = right_padded(prompts)
        encoder = None if encoder_prompts is None else right_padded(encoder_prompts)
        logits, cache = self._prefill(self.params, tokens, segment_ids, encoder, cache_length=tokens.shape[1] + budget)
        state = {
            "cache": cache,
            "logits": logits,
            "tokens": jnp.zeros((batch, budget), jnp.int32),
            "count": jnp.zeros((batch,), jnp.int32),
            "eos": jnp.zeros((batch,), bool),
            "done": jnp.zeros((batch,), bool),
            "step": jnp.zeros((), jnp.int32),
        }
        chunk = stream_every if (on_tokens or stop_strings) else max_new_tokens
        key = jax.random.key(seed)
        stops = StopStrings(stop_strings, tokenizer, batch)
        emitted = [0] * batch
        while True:
            limit = min(int(state["step"]) + chunk, max_new_tokens)
            state = self._decode(self.params, state, jnp.int32(limit), key, sampler=sampler, eos_id=eos_id)
            generated, counts, done = jax.device_get((state["tokens"], state["count"], state["done"]))
            so_far = [list(generated[row, : stops.cut(row, generated[row, : counts[row]])]) for row in range(batch)]
            if on_tokens is not None:
                on_tokens([row_tokens[emitted[row] :] for row, row_tokens in enumerate(so_far)])
            emitted = [len(row_tokens) for row_tokens in so_far]
            finished = done | stops.stopped
            if finished.all() or limit >= max_new_tokens:
                break
            if stops.stopped.any():
                state["done"] = jnp.asarray(finished)
        eos = jax.device_get(state["eos"])
        results = []
        for row, row_tokens in enumerate(so_far):
            reason = "stop" if stops.stopped[row] else "eos" if eos[row] else "length"
            text = stops.text(row, row_tokens) if tokenizer is not None else None
            results.append(Generated([int(t) for t in row_tokens], reason, text))
        return results


def right_padded(prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, segment_ids) [B, bucket(longest)]: each prompt then zeros, segment 1 then 0."""
    tokens = np.zeros((len(prompts), bucket(max(len(p) for p in prompts))), np.int32)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = prompt
    lengths = np.array([[len(p)] for p in prompts])
    return tokens, (np.arange(tokens.shape[1]) < lengths).astype(np.int32)


class StopStrings:
    """Per-row watch for stop strings in the generated text (host side, between decode chunks)."""

    def __init__(self, strings: Sequence[str], tokenizer: Tokenizer | None, batch: int):
        self.strings, self.tokenizer = tuple(strings), tokenizer
        self.stopped = np.zeros(batch, bool)
        self._checked = [0] * batch  # tokens known to hold no stop string
        self._cut: dict[int, int] = {}

    def cut(self, row: int, tokens: Sequence[int]) -> int:
        """How many of the row's tokens to keep: up to the token that completes a stop string."""
        if row in self._cut:
            return self._cut[row]
        if self.strings and self._find(self.tokenizer.decode(tokens)) is not None:
            for end in range(self._checked[row] + 1, len(tokens) + 1):  # the first prefix that holds one
                if self._find(self.tokenizer.decode(tokens[:end])) is not None:
                    self.stopped[row], self._cut[row] = True, end
                    return end
        self._checked[row] = len(tokens)
        return len(tokens)

    def text(self, row: int, tokens: Sequence[int]) -> str:
        """The row's text, ending just before its stop string."""
        text = self.tokenizer.decode(tokens)
        found = self._find(text) if self.stopped[row] else None
        return text if found is None else text[:found]

    def _find(self, text: str) -> int | None:
        positions = [text.find(s) for s in self.strings if s in text]
        return min(positions) if positions else None
