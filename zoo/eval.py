"""Perplexity of a run on held-out text, and how fast it reads it.

    python -m zoo.eval RUN [--data FILE_OR_GLOB ...] [--batches N] [--json]

By default the run's own held-out rows: its data read and split as train.py does (the same
seed and share), so the figure is the run's eval loss. With --data, text files (one document
each) read with the run's tokenizer and cut into rows of train.seq_len + 1 tokens, every row
used up to --batches batches. Prints the mean next-token loss over the counted tokens, its
perplexity, the tokens and the tokens/s of the forward passes after the first (which
compiles); --json prints them as one object.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from zoo import config as zoo_config
from zoo import rundir, runs
from zoo.console import ArgumentParser
from zoo.rundir import RunError


def held_out_rows(run: runs.Run, directory: Path, data: list[str] | None):
    """The rows to evaluate: the run's held-out split, or every row of the `data` files."""
    from zoo.train.data import TokenRows, document_stream
    from zoo.train.loop import encode, load_data
    from zoo.train.phase import Phase
    from zoo.train.sources import read_documents
    from zoo.train.workdir import TrainingError

    config = rundir.read_config(directory)
    quiet = lambda text: None
    try:
        if data is None:
            return load_data(config, directory, fresh=False, say=quiet)[2]
        if run.tokenizer is None:
            raise RunError(f"{directory} has no tokenizer to read --data with")
        documents = read_documents(dataclasses.replace(config.data, source="text", paths=tuple(data)))
        stream = document_stream(encode(run.tokenizer, documents, Phase(quiet, "")), run.tokenizer.bos_id, run.tokenizer.eos_id)
        return TokenRows(stream, config.train.seq_len + 1, run.tokenizer.eos_id)
    except TrainingError as error:
        raise RunError(str(error)) from None
    except ValueError as error:  # the data's own errors (no file matches, unreadable text)
        raise RunError(f"--data: {error}") from None


def evaluate(run_dir: str | Path, data: list[str] | None = None, batches: int | None = None) -> dict:
    """{loss, perplexity, tokens, tokens_per_second, batches} of the run on held-out rows (see the module)."""
    from zoo.train.data import batches as batch_stream
    from zoo.train.step import eval_step

    directory = Path(run_dir)
    run = runs.load(directory)
    rows = held_out_rows(run, directory, data)
    train = run.config.train
    available = len(rows) // train.batch_size
    if available == 0:
        raise RunError(f"the text gives {len(rows)} rows of {train.seq_len + 1} tokens, fewer than one batch of {train.batch_size}")
    count = min(batches or (train.eval_batches if data is None else available), available)
    step = jax.jit(eval_step(run.model, train))
    loader = batch_stream(rows, train.batch_size, seed=0)
    results, timed_tokens, timed = [], 0, 0.0
    for index in range(count):
        batch = {k: jnp.asarray(v) for k, v in next(loader).items()}
        start = time.perf_counter()
        result = jax.device_get(step(run.params, batch))
        if index:  # the first call compiles
            timed, timed_tokens = timed + time.perf_counter() - start, timed_tokens + batch["tokens"].size
        results.append(result)
    tokens = sum(float(r["tokens"]) for r in results)
    loss = sum(float(r["loss"]) * float(r["tokens"]) for r in results) / tokens
    return {
        "loss": loss, "perplexity": math.exp(loss), "tokens": int(tokens), "batches": count,
        "tokens_per_second": timed_tokens / timed if timed else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m zoo.eval", description="Perplexity of a run on held-out text, and tokens/s.")
    parser.add_argument("run", help="a run directory")
    parser.add_argument("--data", nargs="+", metavar="FILE", help="text files or globs (default: the run's own held-out rows)")
    parser.add_argument("--batches", type=int, metavar="N", help="batches of train.batch_size rows (default: train.eval_batches, or all of --data)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.batches is not None and args.batches < 1:
        parser.error(f"--batches must be at least 1, got {args.batches}")
    try:
        figures = evaluate(args.run, args.data, args.batches)
    except (RunError, zoo_config.ConfigError) as error:
        parser.error(str(error))
    if args.json:
        print(json.dumps(figures))
        return
    speed = "" if figures["tokens_per_second"] is None else f" | {figures['tokens_per_second']:,.0f} tokens/s"
    print(f"{args.run}: loss {figures['loss']:.4f} | perplexity {figures['perplexity']:.3f} | {figures['tokens']:,} tokens in {figures['batches']} batches{speed}")


if __name__ == "__main__":
    main()
