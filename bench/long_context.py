"""The long-context decode case of bench/decode.py (issue 17): decode memory and per-token time
of an attention-only model against two Mamba-2 hybrids as the context grows from 1K to 32K tokens.

For each context C the model prefills C tokens into a cache of C + STEPS slots, then decodes
STEPS tokens one at a time; both programs are compiled before they are timed. Memory is the
bytes of the cache the step reads and writes (every array of it, bookkeeping included), and
its two parts from zoo.stats: attention layers keep C keys and values, Mamba-2 layers a
state of one size. A hybrid's global attention layers still grow with C, at their share of
layers; with a sliding window in their place the whole cache stays one size.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from zoo import models, stats
from zoo.config import ModelConfig

import shapes
from common import heading, seconds, show, size

CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768)
STEPS = 32


def cache_bytes(cache) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(cache))


def measure(model: models.Model, params, context: int) -> tuple[int, float, float]:
    """(cache bytes, prefill seconds, median seconds per decode step) at `context` tokens."""
    rng = np.random.default_rng(context)
    prompt = rng.integers(0, model.config.vocab_size, (1, context))
    cache = model.init_cache(batch=1, length=context + STEPS)
    prefill = jax.jit(lambda p, tokens, c: model.apply(p, tokens, cache=c)).lower(params, prompt, cache).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(prefill(params, prompt, cache))
    prefill_seconds = time.perf_counter() - start
    token = np.zeros((1, 1), np.int32)
    step = jax.jit(lambda p, tokens, c: model.apply(p, tokens, cache=c).cache).lower(params, token, out.cache).compile()
    cache, times = out.cache, []
    for _ in range(STEPS):
        start = time.perf_counter()
        cache = jax.block_until_ready(step(params, token, cache))
        times.append(time.perf_counter() - start)
    return cache_bytes(cache), prefill_seconds, statistics.median(times)


def run(small: bool, dtype: str = "bfloat16") -> None:
    """Prints, per context, each model's cache bytes and time per decoded token."""
    device = jax.devices()[0]
    for name, shape in shapes.long_context(small).items():
        config = ModelConfig.from_dict(shape | {"dtype": dtype, "param_dtype": dtype})
        model = models.build(config)
        params = jax.jit(model.init)(jax.random.key(0))
        rows = {}
        for context in CONTEXTS:
            memory, prefill, per_token = measure(model, params, context)
            kv, state = stats.kv_cache_bytes(model, context + STEPS), stats.recurrent_state_bytes(model)
            rows[f"{context:>6,} tokens"] = (
                f"cache {size(memory):>9} (KV {size(kv)}, recurrent state {size(state)}), "
                f"{seconds(per_token):>9} per token ({1 / per_token:,.0f} tokens/s); prefill {seconds(prefill)}"
            )
        title = f"long-context decode, {name}: {config.num_layers} layers, d_model {config.d_model}, {dtype}, batch 1, on {device.device_kind}"
        show(heading(title, small), rows)
