"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus) and min-p."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Greedy when temperature is 0; otherwise a draw from softmax(logits / temperature)
    restricted, in this order, to the top_k most likely tokens, to the smallest set whose
    probability reaches top_p, and to tokens at least min_p times as likely as the best.
    Each filter is off when None."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filtered_log_probs(logits: jax.Array, sampler: Sampler) -> jax.Array:
    """log p over the vocabulary after temperature and the filters; removed tokens get -inf.

    logits: [B, V] -> [B, V] float32, normalised over the tokens that remain.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / sampler.temperature, axis=-1)
    removed = jnp.full_like(log_probs, -jnp.inf)
    if sampler.top_k is not None and sampler.top_k < log_probs.shape[-1]:
        kth = jax.lax.top_k(log_probs, sampler.top_k)[0][:, -1:]
        log_probs = jax.nn.log_softmax(jnp.where(log_probs >= kth, log_probs, removed), axis=-1)
    if sampler.top_p is not None:
        order = jnp.argsort(-log_probs, axis=-1)
        sorted_probs = jnp.exp(jnp.take_along_axis(log_probs, order, axis=-1))
        # keep a token while the mass before it is short of top_p: the first always stays
        keep_sorted = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs < sampler.top_p
        keep = jax.vmap(lambda o, k: jnp.zeros_like(k).at[o].set(k))(order, keep_sorted)
        log_probs = jax.nn.log_softmax(jnp.where(keep, log_probs, removed), axis=-1)
    if sampler.min_p is not None:
        floor = jnp.max(log_probs, axis=-1, keepdims=True) + jnp.log(sampler.min_p)
        log_probs = jax.nn.log_softmax(jnp.where(log_probs >= floor, log_probs, removed), axis=-1)
    return log_probs


def sample(key: jax.Array, logits: jax.Array, sampler: Sampler) -> jax.Array:
    """Next tokens [B] int32 for logits [B, V].

    Every row draws with the same key, so a row's token depends only on its own logits,
    the key and the sampler, not on which other rows share the batch.
    """
    if sampler.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    log_probs = filtered_log_probs(logits, sampler)
    return jax.vmap(lambda row: jax.random.categorical(key, row))(log_probs).astype(jnp.int32)
