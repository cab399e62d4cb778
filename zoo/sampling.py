"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus) and min-p."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


class SettingError(ValueError):
    """A generation setting that cannot be used; `name` is the argument's name, e.g. `top_p`."""

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name} {problem}")


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Greedy when temperature is 0; otherwise a draw from softmax(logits / temperature)
    restricted, in this order, to the top_k most likely tokens, to the smallest set whose
    probability reaches top_p, and to tokens at least min_p times as likely as the best,
    as transformers' TopK, TopP and MinP logits warpers keep them.

    Each filter is off when None; top_k = 0 is off too (as in transformers) and a top_k at
    or above the vocabulary size keeps every token, as does top_p = 1 and min_p = 0.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise SettingError("temperature", f"must be a finite number >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k is not None and not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise SettingError("top_k", f"must be an integer >= 0 (0 is off), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise SettingError("top_p", f"must be in (0, 1] (1 keeps every token), got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p < 1:
            raise SettingError("min_p", f"must be in [0, 1) (0 keeps every token), got {self.min_p}")
        if self.top_k == 0:
            object.__setattr__(self, "top_k", None)  # one spelling of "off", so one compiled program

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filtered_log_probs(logits: jax.Array, sampler: Sampler) -> jax.Array:
    """log p over the vocabulary after temperature and the filters; removed tokens get -inf.

    logits: [B, V] -> [B, V] float32, normalised over the tokens that remain. Each row is
    filtered on its own.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / sampler.temperature, axis=-1)
    removed = jnp.full_like(log_probs, -jnp.inf)
    if sampler.top_k is not None and sampler.top_k < log_probs.shape[-1]:
        kth = jax.lax.top_k(log_probs, sampler.top_k)[0][:, -1:]
        log_probs = jax.nn.log_softmax(jnp.where(log_probs >= kth, log_probs, removed), axis=-1)
    if sampler.top_p is not None:
        # from the least likely up, drop tokens while the mass dropped stays <= 1 - top_p; the
        # best always stays. Summing from the small end keeps top_p = 1 from dropping any
        # token of non-zero probability to float32 rounding.
        order = jnp.argsort(log_probs, axis=-1)
        mass_up_to = jnp.cumsum(jnp.exp(jnp.take_along_axis(log_probs, order, axis=-1)), axis=-1)
        drop_sorted = (mass_up_to <= 1 - sampler.top_p).at[:, -1].set(False)
        drop = jax.vmap(lambda o, d: jnp.zeros_like(d).at[o].set(d))(order, drop_sorted)
        log_probs = jax.nn.log_softmax(jnp.where(drop, removed, log_probs), axis=-1)
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
