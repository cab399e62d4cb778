"""What quantized weights cost in quality (issue 20), on a trained run (default runs/tiny, the
run `python train.py` writes): the eval perplexity on the run's own held-out rows of the float
model and of each scheme of zoo.layers.quantized (int8, w8a8, fp8, nf4), and how often each
quantized model's next-token choice is the float model's: teacher-forced along the float
model's greedy continuation of 200 tokens (top-1 agreement), and how many tokens its own
greedy continuation keeps to the float one's before they part. Weight bytes from zoo.stats.

    python bench/quantization.py [RUN] [--prompts 4] [--tokens 200]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoo import rundir, runs, stats
from zoo.generate import Generator
from zoo.layers.quantized import SCHEMES
from zoo.quantize import quantized_run
from zoo.sampling import Sampler
from zoo.train.data import batches
from zoo.train.loop import load_data
from zoo.train.step import eval_step

from common import show


def perplexity(run: runs.Run, eval_rows, count: int) -> float:
    run_config = run.config.train
    step = jax.jit(eval_step(run.model, run_config))
    loader = batches(eval_rows, run_config.batch_size, seed=0)
    results = [jax.device_get(step(run.params, {k: jnp.asarray(v) for k, v in next(loader).items()})) for _ in range(count)]
    return math.exp(sum(r["loss"] * r["tokens"] for r in results) / sum(r["tokens"] for r in results))


def greedy(run: runs.Run, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    generator = Generator(run.model, run.params)
    return [out.tokens for out in generator(prompts, max_new_tokens=tokens, sampler=Sampler(temperature=0))]


def agreement(run: runs.Run, prompts: list[list[int]], continuations: list[list[int]]) -> float:
    """The share of the continuations' tokens that `run` also ranks first, given the same prefix."""
    same = total = 0
    for prompt, continuation in zip(prompts, continuations):
        sequence = jnp.asarray([prompt + continuation], jnp.int32)
        predicted = np.asarray(jnp.argmax(run.model.apply(run.params, sequence[:, :-1]).logits[0], -1))
        chosen = predicted[len(prompt) - 1 :]
        same += int(np.sum(chosen == np.asarray(continuation)))
        total += len(continuation)
    return same / total


def kept(ours: list[list[int]], reference: list[list[int]]) -> float:
    """Mean length of the common start of each pair of continuations."""
    return float(np.mean([next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(ours, reference)]))


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("run", nargs="?", default="runs/tiny", help="a trained run directory (default runs/tiny)")
    cli.add_argument("--prompts", type=int, default=4, help="prompts: the first 32 tokens of this many held-out rows")
    cli.add_argument("--tokens", type=int, default=200, help="greedy tokens generated from each prompt")
    args = cli.parse_args()
    directory = Path(args.run)
    float_run = runs.load(directory)
    config = rundir.read_config(directory)
    _, _, eval_rows = load_data(config, directory, fresh=False, say=lambda text: None)
    prompts = [list(map(int, eval_rows[i]["tokens"][:32])) for i in range(args.prompts)]
    count = config.train.eval_batches
    reference = greedy(float_run, prompts, args.tokens)
    held = stats.weight_bytes(float_run.model)
    rows = {"float": f"eval perplexity {perplexity(float_run, eval_rows, count):8.3f} | weights {held['float32'] / 1e6:8.2f} MB"}
    for scheme in SCHEMES:
        run = quantized_run(float_run, scheme)
        ours = greedy(run, prompts, args.tokens)
        rows[scheme] = (
            f"eval perplexity {perplexity(run, eval_rows, count):8.3f} | weights {held[scheme] / 1e6:8.2f} MB | "
            f"top-1 agreement {agreement(run, prompts, reference):6.1%} | greedy tokens kept {kept(ours, reference):5.1f} of {args.tokens}"
        )
    show(f"quantized weights on {directory} ({count} eval batches of {config.train.batch_size} x {config.train.seq_len}; "
         f"{args.prompts} prompts of 32 held-out tokens)", rows)


if __name__ == "__main__":
    main()
