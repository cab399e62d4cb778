"""Decode throughput of the TinyLlama-1.1B shape in zoo (issue 9): bf16 weights, 128-token prompts,
256 new tokens, greedy, batch 1 and 16, through zoo.generate.Generator.

Each decode step reads every weight matrix once, and each row's live KV cache, so memory
bandwidth bounds it: the roofline is bandwidth / bytes per step. Each call is timed inside
Generator, at its first-token callback (on_tokens): the time to the first token (the prefill
and one step), then the decode steps after it (tokens/s of the remaining 255); tokens/s end to
end include both. GPU targets: batch 1 >= 85% of the roofline (about 1,150 tokens/s), batch 16
>= 12,000 tokens/s.
With --reference, transformers' generate (LlamaForCausalLM, bf16, greedy) on the same prompts.
With --long-context, the long-context case instead (bench/long_context.py): decode memory and
per-token time of an attention-only model and a Mamba-2 hybrid at 1K to 32K tokens.

    python bench/decode.py [--small] [--reference] [--kernel chunked] [--long-context]
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from zoo import models, stats
from zoo.config import ModelConfig
from zoo.generate import Generator
from zoo.layers.attention import KERNELS
from zoo.sampling import Sampler

import long_context
import shapes
from common import bandwidth, heading, log_attention_choices, parser, seconds, share, show, size, timed
from limits import Limits, measure, show_limits

BATCHES = (1, 16)
LENGTHS = {False: (128, 256), True: (32, 64)}  # --small: (prompt tokens, new tokens)
GREEDY = Sampler(temperature=0)


def bytes_per_step(model: models.Model, batch: int, context: int) -> tuple[int, int]:
    """(weight bytes, KV-cache bytes) one decode step reads: every matrix a token multiplies by
    (the embedding lookup reads only B rows, norms are negligible) and `batch` rows' caches of
    `context` tokens, at the compute dtype."""
    weights = stats.matmul_params(model) * jnp.dtype(model.config.dtype).itemsize
    return weights, stats.kv_cache_bytes(model, context) * batch


def phases(generator: Generator, prompts: list[list[int]], new_tokens: int, args) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(the first call's, the median over args.steps calls after args.warmup of) time to the first
    token, seconds per decode step after it, and seconds end to end, marked when Generator hands
    over its first token (it has read it back from the device by then)."""

    def once() -> tuple[float, float, float]:
        marks: list[float] = []
        start = time.perf_counter()
        generator(prompts, max_new_tokens=new_tokens, sampler=GREEDY, on_tokens=lambda counts: marks.append(time.perf_counter()))
        end = time.perf_counter()
        return marks[0] - start, (end - marks[0]) / (new_tokens - 1), end - start

    first = once()
    for _ in range(args.warmup):
        once()
    runs = [once() for _ in range(max(args.steps, 1))]
    return first, tuple(statistics.median(run[i] for run in runs) for i in range(3))


def zoo_rows(generator: Generator, prompts: list[list[int]], new_tokens: int, limits: Limits, args) -> tuple[dict, float]:
    """Figures for one batch of prompts, and the end-to-end seconds (for the reference's ratio)."""
    batch, prompt = len(prompts), len(prompts[0])
    first, (to_first, step, total) = phases(generator, prompts, new_tokens, args)
    context = prompt + new_tokens // 2  # the mean over the decode steps
    weights, cache = bytes_per_step(generator.model, batch, context)
    achieved = (weights + cache) / step
    rates = {"datasheet bandwidth": limits.bandwidth, "measured copy bandwidth": limits.copy_bandwidth}
    roofline = [f"{batch * rate / (weights + cache):,.0f} tokens/s at {name}" for name, rate in rates.items() if rate]
    return {
        "first token": f"{seconds(to_first)} ({prompt}-token prefill and one step, median of {args.steps}; "
        f"first call {seconds(first[0])}, compiles included)",
        "decode step": f"{seconds(step)} ({batch / step:,.0f} tokens/s over the {new_tokens - 1} steps after the first token)",
        "end to end": f"{batch * new_tokens / total:,.0f} tokens/s ({seconds(total)} for prefill + {new_tokens} tokens)",
        "bytes per step": f"{size(weights)} weights + {size(cache)} KV cache ({batch} x {context} tokens, the mean context)",
        "achieved": f"{bandwidth(achieved)}: {share(achieved, limits.bandwidth, 'datasheet bandwidth')}, "
        f"{share(achieved, limits.copy_bandwidth, 'measured copy bandwidth')}",
        "roofline": ", ".join(roofline),
    }, total


def reference_rows(config: ModelConfig, prompts: list[list[int]], new_tokens: int, zoo_seconds: float, args) -> dict:
    """transformers' greedy generate on the same prompts, and zoo's end-to-end ratio to it."""
    try:
        import hf_reference
    except ImportError as error:
        return {"transformers": f"skipped: {error}"}
    net = hf_reference.model(config, hf_reference.torch.bfloat16)
    run = hf_reference.generate(net, np.array(prompts), new_tokens)
    timing = timed(run, steps=args.reference_steps, warmup=args.warmup, wait=hf_reference.wait)
    return {
        "what": f"{hf_reference.describe()}, {type(net).__name__}.generate, attention {net.config._attn_implementation}",
        "end to end": f"{len(prompts) * new_tokens / timing.median:,.0f} tokens/s "
        f"({seconds(timing.median)}, median of {args.reference_steps})",
        "zoo / transformers": f"{timing.median / zoo_seconds:.2f}x the tokens/s",
    }


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--kernel", default="auto", choices=KERNELS.names(), help="attention kernel (default auto)")
    cli.add_argument("--long-context", action="store_true", help="the hybrid against attention alone, 1K to 32K tokens")
    args = cli.parse_args()
    log_attention_choices()
    if args.long_context:
        long_context.run(args.small)
        return
    prompt, new_tokens = LENGTHS[args.small]
    config = ModelConfig.from_dict(
        shapes.tinyllama(args.small)
        | {"dtype": "bfloat16", "param_dtype": "bfloat16", "attention": {"kernel": args.kernel}}
    )
    model = models.build(config)
    limits = measure(args.small)
    show_limits(limits)
    generator = Generator(model, jax.jit(model.init)(jax.random.key(0)))
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        prompts = rng.integers(0, config.vocab_size, (batch, prompt)).tolist()
        rows, zoo_seconds = zoo_rows(generator, prompts, new_tokens, limits, args)
        target = {1: ">= 85% of the roofline, about 1,150 tokens/s", 16: ">= 12,000 tokens/s"}[batch]
        show(
            heading(f"zoo decode, batch {batch}: {stats.total_params(model):,} params in bf16, {prompt}-token prompts, "
                    f"{new_tokens} new tokens, greedy, attention {config.attention.kernel}", args.small),
            rows | {"GPU target": target},
        )
        if args.reference:
            show(f"transformers reference, batch {batch}", reference_rows(config, prompts, new_tokens, zoo_seconds, args))


if __name__ == "__main__":
    main()
