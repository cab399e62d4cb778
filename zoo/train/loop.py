"""The training run: tokenizer, data, sharded state, the step loop, logs and checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import jax
import numpy as np
from jax.sharding import NamedSharding

from zoo import config as zoo_config
from zoo.config import Config
from zoo.models import build
from zoo.sharding import activation_sharding, make_mesh, partition_spec, shardings
from zoo.tokenizer import Tokenizer
from zoo.train.checkpoint import Checkpoints
from zoo.train.corpus import stdlib_documents
from zoo.train.data import PackedRows, batches, pack
from zoo.train.optimizer import learning_rate, optimizer
from zoo.train.step import eval_step, init_state, train_step


class TrainingError(RuntimeError):
    """A run that cannot go on as asked: its work directory, data or settings do not fit."""


def prepare_workdir(workdir: Path, config: Config, *, fresh: bool) -> None:
    """Creates the work directory; refuses one whose checkpoints belong to a different model."""
    workdir.mkdir(parents=True, exist_ok=True)
    if fresh:
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
        (workdir / "metrics.jsonl").unlink(missing_ok=True)
    saved = workdir / "config.toml"
    if (workdir / "checkpoints").exists() and saved.exists():
        previous = zoo_config.load(saved)
        if previous.model != config.model:
            raise TrainingError(
                f"{workdir} holds checkpoints of a different model (see {saved}); "
                "use another --workdir, or --fresh to discard them"
            )
    saved.write_text(zoo_config.to_toml(config))


def load_tokenizer(workdir: Path, documents: list[str], vocab_size: int) -> Tokenizer:
    """The work directory's tokenizer, trained on `documents` the first time."""
    path = workdir / "tokenizer.model"
    if path.exists():
        tokenizer = Tokenizer.load(path)
    else:
        try:
            tokenizer = Tokenizer.train(documents, vocab_size)
        except ValueError as error:
            raise TrainingError(f"{error}; raise model.vocab_size") from None
        tokenizer.save(path)
    if tokenizer.vocab_size > vocab_size:
        raise TrainingError(
            f"the tokenizer at {path} has {tokenizer.vocab_size} tokens but model.vocab_size is {vocab_size}; "
            "raise model.vocab_size or delete the tokenizer to train a new one"
        )
    return tokenizer


def format_eta(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def train(config: Config, workdir: str | Path, *, fresh: bool = False, out: TextIO | None = None) -> dict:
    """Trains `config` on the embedded corpus, resuming from the latest checkpoint in `workdir`.

    Writes config.toml, tokenizer.model, checkpoints/ and metrics.jsonl there, and
    returns the last logged metrics.
    """
    out = out or sys.stdout
    workdir = Path(workdir)
    prepare_workdir(workdir, config, fresh=fresh)
    run = config.train
    documents = stdlib_documents()
    tokenizer = load_tokenizer(workdir, documents, config.model.vocab_size)
    rows = pack(tokenizer.encode_batch(documents), run.seq_len + 1)
    train_rows, eval_rows = rows.split(max(run.batch_size * run.eval_batches, len(rows) // 100))

    mesh = make_mesh(dataclasses.asdict(config.mesh))
    batch_devices = math.prod(mesh.shape[a] for a in ("data", "fsdp", "expert"))
    if run.batch_size % batch_devices:
        raise TrainingError(
            f"train.batch_size={run.batch_size} does not divide over the {batch_devices} devices "
            "of the data, fsdp and expert mesh axes; pick a multiple"
        )
    model = build(config.model)
    tx = optimizer(run)
    key = jax.random.key(run.seed)
    make_state = functools.partial(init_state, model, tx)
    state_layout = shardings(jax.eval_shape(make_state, key), mesh)
    row_shape = (run.batch_size, run.seq_len + 1)
    batch_layout = NamedSharding(mesh, partition_spec(("batch", "length"), row_shape, mesh))
    step_fn = jax.jit(train_step(model, tx), out_shardings=(state_layout, None), donate_argnums=0)
    eval_fn = jax.jit(eval_step(model))
    schedule = learning_rate(run)

    data = batches(train_rows, run.batch_size, seed=run.seed)
    checkpoints = Checkpoints(workdir / "checkpoints", keep=run.keep_checkpoints)
    start = checkpoints.latest_step()
    with activation_sharding(mesh):
        if start is None:
            state = jax.jit(make_state, out_shardings=state_layout)(key)
            start = 0
        else:
            abstract = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), jax.eval_shape(make_state, key), state_layout
            )
            state = checkpoints.restore(start, abstract, data)
            print(f"resumed from step {start} in {workdir / 'checkpoints'}", file=out)

        def evaluate(params) -> float:
            loader = batches(eval_rows, run.batch_size, seed=0)
            losses = [eval_fn(params, jax.device_put(next(loader), batch_layout))["loss"] for _ in range(run.eval_batches)]
            return float(np.mean(jax.device_get(losses)))

        metrics_file = (workdir / "metrics.jsonl").open("a")
        tokens_per_step = run.batch_size * run.seq_len
        last = {}
        timer, timed_steps = time.perf_counter(), 0
        for step in range(start, run.steps):
            state, metrics = step_fn(state, jax.device_put(next(data), batch_layout))
            timed_steps += 1
            done = step + 1
            if done % run.log_every == 0 or done == run.steps:
                metrics = jax.device_get(metrics)
                elapsed = time.perf_counter() - timer
                last = {
                    "step": done,
                    "loss": float(metrics["loss"]),
                    "learning_rate": float(schedule(step)),
                    "grad_norm": float(metrics["grad_norm"]),
                    "tokens_per_second": timed_steps * tokens_per_step / elapsed,
                }
                if done % run.eval_every == 0 or done == run.steps:
                    last["eval_loss"] = evaluate(state.params)
                    last["eval_perplexity"] = math.exp(min(last["eval_loss"], 50.0))
                if not math.isfinite(last["loss"]):
                    raise TrainingError(f"the loss became {last['loss']} at step {done}; stopping")
                metrics_file.write(json.dumps(last) + "\n")
                metrics_file.flush()
                eta = (run.steps - done) * elapsed / timed_steps
                line = (
                    f"step {done}/{run.steps} | loss {last['loss']:.3f} | lr {last['learning_rate']:.2e} | "
                    f"{last['tokens_per_second']:,.0f} tok/s | ETA {format_eta(eta)}"
                )
                if "eval_loss" in last:
                    line += f" | eval {last['eval_loss']:.3f}"
                print(line, file=out, flush=True)
                timer, timed_steps = time.perf_counter(), 0
            if done % run.checkpoint_every == 0 or done == run.steps:
                checkpoints.save(done, state, data)
        metrics_file.close()
    checkpoints.close()
    return last
