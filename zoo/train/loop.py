"""The training run: data, model, parallel strategy, the step loop, logs and checkpoints."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Literal, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from zoo import config as zoo_config
from zoo import runs
from zoo.config import Config, TrainConfig
from zoo.hardware import peak_flops
from zoo.models import Model, build
from zoo.runs import CHECKPOINTS, TOKENIZER
from zoo.sharding import make_mesh
from zoo.stats import flops_per_token, total_params
from zoo.tokenizer import Tokenizer
from zoo.train import workdir as run_dir
from zoo.train.checkpoint import Checkpoints
from zoo.train.data import TokenRows, batches, document_stream
from zoo.train.optimizer import learning_rate, optimizer
from zoo.train.parallel import Pmap, ShardedJit
from zoo.train.step import TrainState
from zoo.train.report import Report
from zoo.train.sources import DataError, read_documents, read_token_stream
from zoo.train.workdir import TrainingError


def load_data(config: Config, workdir: Path) -> tuple[Tokenizer | None, TokenRows]:
    """The run's tokenizer (None for pre-tokenised data without one) and its rows of seq_len + 1 tokens."""
    data, vocab_size = config.data, config.model.vocab_size
    try:
        if data.source == "tokens":
            tokenizer = run_dir.tokenizer(workdir, vocab_size, given=data.tokenizer, documents=None)
            stream, end_id = read_token_stream(data), data.document_end_id
            largest = int(stream.max())
            if largest >= vocab_size:
                raise TrainingError(f"the token data holds id {largest}, beyond model.vocab_size={vocab_size}")
        else:
            documents = read_documents(data)
            tokenizer = run_dir.tokenizer(workdir, vocab_size, given=data.tokenizer, documents=documents)
            stream = document_stream(tokenizer.encode_batch(documents), tokenizer.bos_id, tokenizer.eos_id)
            end_id = tokenizer.eos_id
    except DataError as error:
        raise TrainingError(str(error)) from None
    return tokenizer, TokenRows(stream, config.train.seq_len + 1, end_id)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("s") else "s")


def initial_state(strategy, model: Model, run: TrainConfig) -> TrainState:
    """A fresh state: random params, or the latest params of the run directory `run.init_from`
    (fine-tuning), with a new optimizer state either way."""
    state = strategy.init(jax.random.key(run.seed))
    if run.init_from is None:
        return state
    try:
        source_model = build(zoo_config.load(Path(run.init_from) / runs.CONFIG).model)
        shapes = lambda m: jax.tree.map(lambda a: (a.shape, a.dtype), m.abstract_params)
        if shapes(source_model) != shapes(model):
            raise TrainingError(f"train.init_from={run.init_from!r} holds a model of other shapes than model.* describes")
        params = runs.load(run.init_from, shardings=strategy.param_layout).params
    except (runs.RunError, zoo_config.ConfigError) as error:
        raise TrainingError(f"train.init_from={run.init_from!r}: {error}") from None
    return strategy.from_saved(dataclasses.replace(strategy.to_saved(state), params=params))


def restore_latest(checkpoints: Checkpoints, strategy, data, report: Report):
    """(state, step) from the newest readable checkpoint, or None.

    An unreadable checkpoint (truncated, corrupt) is reported and set aside, not deleted.
    """
    for step in reversed(checkpoints.all_steps()):
        try:
            return strategy.from_saved(checkpoints.restore(step, strategy.restore_target(), data)), step
        except Exception as error:  # a truncated or corrupt checkpoint shows up as many error types
            kept = checkpoints.set_aside(step)
            report.say(f"checkpoint {step} cannot be read ({type(error).__name__}: {error}); moved it to {kept} "
                       "and trying the one before")
    return None


def train(
    config: Config,
    workdir: str | Path,
    *,
    fresh: bool = False,
    parallel: Literal["jit", "pmap"] = "jit",
    out: TextIO | None = None,
) -> dict:
    """Trains `config`, resuming from the newest checkpoint in `workdir`; returns the last logged metrics.

    Writes config.toml, tokenizer.model, checkpoints/, metrics.jsonl and loss.png there
    (from process 0; checkpoints are written by all processes together).
    """
    workdir, run = Path(workdir), config.train
    if config.model.kind != "decoder":
        raise TrainingError(
            f"train.py trains decoder-only language models (next-token loss); model.kind={config.model.kind!r} "
            "needs another objective (masked tokens, or source/target pairs) that it does not provide yet"
        )
    processes, main = jax.process_count(), jax.process_index() == 0
    run_dir.prepare(workdir, config, fresh=fresh, write=main)
    if processes > 1:
        multihost_utils.sync_global_devices("zoo: work directory ready")
    tokenizer, rows = load_data(config, workdir)
    if main and tokenizer is not None and not (workdir / TOKENIZER).exists():
        tokenizer.save(workdir / TOKENIZER)

    model, tx = build(config.model), optimizer(run)
    if parallel == "pmap":
        strategy = Pmap(model, tx, run)
    else:
        strategy = ShardedJit(model, tx, run, make_mesh(dataclasses.asdict(config.mesh)))
    micro_batch = run.batch_size // run.grad_accumulation
    if micro_batch % strategy.batch_devices:
        raise TrainingError(
            f"train.batch_size={run.batch_size} (micro-batches of {micro_batch}) does not divide over the "
            f"{strategy.batch_devices} devices that split the batch; pick a multiple"
        )
    eval_count = max(run.batch_size * run.eval_batches, round(len(rows) * config.data.eval_fraction))
    if len(rows) < eval_count + run.batch_size:
        raise TrainingError(
            f"the data gives {len(rows)} rows of {run.seq_len + 1} tokens, too few for {eval_count} held-out rows "
            f"and a training batch of {run.batch_size}; use more data or a smaller batch or seq_len"
        )
    train_rows, eval_rows = rows.split(eval_count)
    shard = dict(shard_index=jax.process_index(), shard_count=processes)
    data = batches(train_rows, run.batch_size, seed=run.seed, **shard)

    report = Report(workdir, run.steps, out or sys.stdout, enabled=main)
    checkpoints = Checkpoints(workdir / CHECKPOINTS, keep=run.keep_checkpoints)
    restored = restore_latest(checkpoints, strategy, data, report)
    state, start = restored if restored else (initial_state(strategy, model, run), 0)
    devices, platform = strategy.num_devices, jax.devices()[0].platform
    report.say(
        f"{total_params(model):,} parameters | {plural(devices, platform + ' device')}, {plural(processes, 'process')}, "
        f"{parallel} | " + (f"resumed from step {start}" if start else "starting at step 0")
    )
    peak = peak_flops()
    report.say(f"MFU against {peak[0] / 1e12:.0f} TFLOP/s per device ({peak[1]})" if peak else "MFU: no peak FLOP/s known for this device")
    model_flops = flops_per_token(model, run.seq_len)
    schedule = learning_rate(run)

    def evaluate() -> float:
        loader = batches(eval_rows, run.batch_size, seed=0, **shard)
        results = [strategy.evaluate(state, strategy.put_batch(next(loader))) for _ in range(run.eval_batches)]
        results = jax.device_get(results)
        return float(sum(r["loss"] * r["tokens"] for r in results) / sum(r["tokens"] for r in results))

    last, good_step = {}, (start or None)
    timer, timed, totals = time.perf_counter(), 0, None
    try:
        for step in range(start, run.steps):
            state, metrics = strategy.step(state, strategy.put_batch(next(data)))
            totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)  # stays on device
            timed, done = timed + 1, step + 1
            logging = done % run.log_every == 0 or done == run.steps
            saving = done % run.checkpoint_every == 0 or done == run.steps
            if not (logging or saving):
                continue
            interval = {name: np.asarray(value) / timed for name, value in jax.device_get(totals).items()}
            if not math.isfinite(interval["loss"]) or interval["nonfinite_params"]:
                kept = f"the last good checkpoint (step {good_step}) is kept" if good_step else "no checkpoint was written"
                raise TrainingError(
                    f"training diverged by step {done}: the loss is {interval['loss']:.4g} and "
                    f"{interval['nonfinite_params'] * timed:.0f} parameter values are not finite; stopping ({kept}). "
                    "Lower train.learning_rate or check the data."
                )
            if saving:
                checkpoints.save(done, strategy.to_saved(state), data)
                good_step = done
            if logging:
                elapsed = time.perf_counter() - timer
                tokens_per_second = timed * run.batch_size * run.seq_len / elapsed
                last = {  # loss, z_loss and grad_norm are means over the steps since the last log
                    "step": done,
                    "loss": float(interval["loss"]),
                    "learning_rate": float(schedule(step)),
                    "grad_norm": float(interval["grad_norm"]),
                    "tokens_per_second": tokens_per_second,
                }
                if run.z_loss:
                    last["z_loss"] = float(interval["z_loss"])
                for name in ("moe_balance_loss", "moe_z_loss", "drop_fraction"):
                    if name in interval:
                        last[name] = float(interval[name])
                if "expert_load" in interval:  # each expert's share of the routed tokens
                    last["expert_load"] = [round(float(share), 4) for share in interval["expert_load"]]
                if peak:
                    last["mfu"] = model_flops * tokens_per_second / (peak[0] * devices)
                if done % run.eval_every == 0 or done == run.steps:
                    last["eval_loss"] = evaluate()
                    last["eval_perplexity"] = math.exp(min(last["eval_loss"], 50.0))
                report.log(last, eta_seconds=(run.steps - done) * elapsed / timed)
                timer, timed, totals = time.perf_counter(), 0, None
    finally:
        checkpoints.close()
        report.close()
    return last
