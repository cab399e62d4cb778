"""The training run: checks, data, model, parallel strategy, the step loop, logs and checkpoints."""

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
from flax import nnx
from jax.experimental import multihost_utils

from zoo import compile_cache, rundir, runs
from zoo.config import Config, DataConfig, TrainConfig
from zoo.hardware import peak_flops
from zoo.layers.quantized import hold
from zoo.models import Model, build
from zoo.runs import CHECKPOINTS
from zoo.stats import active_params, flops_per_token, total_params, trainable_params
from zoo.tokenizer import TextTokenizer
from zoo.train import preflight
from zoo.train import workdir as run_dir
from zoo.train.checkpoint import Checkpoints
from zoo.train.data import TokenRows, batches, document_stream
from zoo.train.interrupt import Interrupted, Interrupts
from zoo.train.optimizer import learning_rate, optimizer
from zoo.train.parallel import Pmap, ShardedJit
from zoo.train.phase import Phase
from zoo.train.report import Pace, Report
from zoo.train.resume import restore_latest
from zoo.train.sources import DataError, read_documents, read_token_stream
from zoo.train.step import TrainState
from zoo.train.wandb_run import WandbRun
from zoo.train.workdir import Diverged, TrainingError


def load_data(config: Config, workdir: Path, *, fresh: bool, say) -> tuple[TextTokenizer | None, TokenRows, TokenRows]:
    """The run's tokenizer (None for pre-tokenised data without one), its training rows of
    seq_len + 1 tokens and its held-out rows (a seeded random sample), each phase said as it runs."""
    data, run, vocab_size = config.data, config.train, config.model.vocab_size
    given = data.tokenizer
    if given is None and run.init_from is not None:  # a run started from another reads text as that one did
        found = rundir.tokenizer_path(Path(run.init_from))
        given = None if found is None else str(found)
    try:
        if data.source == "tokens":
            tokenizer = run_dir.tokenizer(workdir, vocab_size, given=given, documents=None, fresh=fresh, say=say)
            phase = Phase(say, f"reading token ids: {', '.join(data.paths)}")
            stream, end_id = read_token_stream(data), data.document_end_id
            largest = int(stream.max())
            if largest >= vocab_size:
                raise TrainingError(f"the token data holds id {largest}, beyond model.vocab_size={vocab_size}")
        else:
            phase = Phase(say, f"reading the corpus: {describe(data)}")
            documents = read_documents(data)
            phase.done(f"{len(documents):,} documents, {sum(map(len, documents)):,} characters")
            tokenizer = run_dir.tokenizer(workdir, vocab_size, given=given, documents=documents, fresh=fresh, say=say)
            phase = Phase(say, f"tokenising {len(documents):,} documents")
            stream = document_stream(encode(tokenizer, documents, phase), tokenizer.bos_id, tokenizer.eos_id)
            end_id = tokenizer.eos_id
    except DataError as error:
        raise TrainingError(str(error)) from None
    rows = TokenRows(stream, run.seq_len + 1, end_id)
    eval_count = max(run.batch_size * run.eval_batches, round(len(rows) * data.eval_fraction))
    if len(rows) < eval_count + run.batch_size:
        raise TrainingError(
            f"the data gives {len(rows)} rows of {run.seq_len + 1} tokens, too few for {eval_count} held-out rows "
            f"and a training batch of {run.batch_size}; use more data or a smaller batch or seq_len"
        )
    phase.done(f"{len(stream):,} tokens: {len(rows):,} rows of {rows.row_length}, {eval_count:,} of them held out at random for evaluation")
    return (tokenizer, *rows.split(eval_count, seed=run.seed))


def describe(data: DataConfig) -> str:
    """Where a text source's documents come from, in words."""
    if data.source == "stdlib":
        return "the standard library's Python sources (the embedded default corpus)"
    return ", ".join(data.paths) + (f" (field {data.text_field!r} of each line)" if data.source == "jsonl" else "")


def encode(tokenizer: TextTokenizer, documents: list[str], phase: Phase, chunk: int = 256) -> list[list[int]]:
    """Every document's ids, with progress said through `phase`."""
    ids: list[list[int]] = []
    for start in range(0, len(documents), chunk):
        ids += tokenizer.encode_batch(documents[start : start + chunk])
        phase.progress(len(ids), len(documents), "documents")
    return ids


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("s") else "s")


def check_init_from(model: Model, run: TrainConfig) -> None:
    """Refuses a `train.init_from` run directory that is missing or holds a model of other shapes."""
    if run.init_from is None:
        return
    try:
        source = rundir.read_config(runs.check_path(run.init_from))
    except runs.RunError as error:
        hint = "; LoRA adapts a trained run: train that one first" if run.lora is not None else ""
        raise TrainingError(f"train.init_from={run.init_from!r}: {error}{hint}") from None
    if source.train.lora is not None:
        raise TrainingError(
            f"train.init_from={run.init_from!r} is a LoRA run (adapters on {source.train.init_from}); start from a full run, "
            f"or fold its adapters into one first: python -m zoo.lora merge {run.init_from} OUT"
        )
    shapes = lambda m: jax.tree.map(lambda a: (a.shape, a.dtype), m.abstract_params)
    if shapes(build(source.model)) != shapes(build(model.config)):
        raise TrainingError(f"train.init_from={run.init_from!r} holds a model of other shapes than model.* describes")


def initial_state(strategy, run: TrainConfig) -> TrainState:
    """A fresh state: random params, or the latest params of the run directory `run.init_from`
    (fine-tuning), with a new optimizer state either way. With LoRA: fresh adapters (the base
    weights are the strategy's frozen ones, see load_frozen)."""
    state = strategy.init(jax.random.key(run.seed))
    if run.init_from is None or run.lora is not None:
        return state
    try:
        params = runs.load(run.init_from, shardings=strategy.param_layout).params
    except runs.RunError as error:
        raise TrainingError(f"train.init_from={run.init_from!r}: {error}") from None
    return strategy.from_saved(dataclasses.replace(strategy.to_saved(state), params=params))


def load_frozen(strategy, model: Model, run: TrainConfig) -> None:
    """Hands a LoRA run's strategy the base weights its adapters adapt: the latest params of
    `run.init_from`, held as train.lora.base_weights says (bfloat16, or quantized)."""
    try:
        params = runs.load(run.init_from, shardings=strategy.frozen_layout).params
    except runs.RunError as error:
        raise TrainingError(f"train.init_from={run.init_from!r}: {error}") from None
    base = build(model.config).bind(params)
    hold(base, run.lora.base_weights)
    strategy.set_frozen(nnx.state(base))


def train(
    config: Config,
    workdir: str | Path,
    *,
    fresh: bool = False,
    parallel: Literal["jit", "pmap"] = "jit",
    out: TextIO | None = None,
    wandb: str | None = None,
) -> dict:
    """Trains `config`, resuming from the newest checkpoint in `workdir`; returns the last logged metrics.

    Writes config.toml, tokenizer.model, checkpoints/, metrics.jsonl and loss.png there
    (from process 0; checkpoints are written by all processes together). `fresh` sets an
    earlier run's files aside (into previous/) and starts over, tokenizer included; that
    happens only once everything else has been checked. SIGINT or SIGTERM stops the run
    after the current step with a checkpoint of it, raising Interrupted. `wandb` logs the
    metrics to that wandb project too ("" for wandb's default; None: no wandb).
    """
    out = out or sys.stdout
    with Interrupts(out) as interrupts:
        return _train(config, Path(workdir), fresh, parallel, out, interrupts, wandb)


def plan(config: Config, workdir: Path, *, fresh: bool, parallel: str) -> tuple[Model, ShardedJit | Pmap]:
    """The run's model (abstract, no weights) and parallel strategy, after every check that needs
    no work: nothing compiled, no data read, nothing written. TrainingError when one fails."""
    run = config.train
    if config.model.kind != "decoder":
        raise TrainingError(
            f"train.py trains decoder-only language models (next-token loss); model.kind={config.model.kind!r} "
            "needs another objective (masked tokens, or source/target pairs) that it does not provide yet"
        )
    if config.model.quantization != "none":
        raise TrainingError(
            f"model.quantization={config.model.quantization!r} holds weights for inference; train the float model, "
            "or fine-tune adapters on a quantized base with train.lora.base_weights"
        )
    # Everything that can be checked without work, before the tokenizer is trained or anything written.
    preflight.check_workdir(workdir)
    preflight.check_kernel(config)
    mesh = preflight.device_mesh(config) if parallel == "jit" else None
    run_dir.check_resumable(workdir, config, fresh=fresh)
    try:
        model = build(config.model, run.lora)
    except ValueError as error:  # LoRA targets that match nothing, a rank too large
        raise TrainingError(f"train.lora: {error}") from None
    tx = optimizer(run)
    check_init_from(model, run)
    strategy = Pmap(model, tx, run) if mesh is None else ShardedJit(model, tx, run, mesh)
    preflight.check_memory(model, shards=1 if mesh is None else mesh.size // mesh.shape["data"])
    micro_batch = run.batch_size // run.grad_accumulation
    if micro_batch % strategy.batch_devices:
        raise TrainingError(
            f"train.batch_size={run.batch_size} (micro-batches of {micro_batch}) does not divide over the "
            f"{strategy.batch_devices} devices that split the batch; pick a multiple"
        )
    return model, strategy


def dry_run(config: Config, workdir: str | Path, *, fresh: bool = False, parallel: str = "jit", out: TextIO | None = None) -> None:
    """Prints what a run of `config` would be (parameter counts, batch shapes, the mesh) after the
    checks a run makes first; compiles nothing, reads no data and writes nothing."""
    out, workdir, run = out or sys.stdout, Path(workdir), config.train
    model, strategy = plan(config, workdir, fresh=fresh, parallel=parallel)
    if jax.process_index() != 0:
        return
    processes, rows = jax.process_count(), run.seq_len + 1
    # The pipeline's first batch, of a stand-in stream just long enough: its shape, not its tokens.
    stand_in = TokenRows(np.zeros(run.batch_size * rows, np.int32), rows, None)
    first = next(batches(stand_in, run.batch_size, seed=run.seed, shard_index=jax.process_index(), shard_count=processes))
    shape = lambda dims: "[" + ", ".join(str(d) for d in dims) + "]"
    if isinstance(strategy, ShardedJit):
        per_device = strategy.batch_layout.shard_shape((run.batch_size, rows))
        mesh = " ".join(f"{axis}={size}" for axis, size in strategy.mesh.shape.items())
    else:
        per_device, mesh = (run.batch_size // strategy.num_devices, rows), "none (pmap splits the batch over every device)"
    micro = run.batch_size // run.grad_accumulation
    lines = [
        f"dry run: nothing compiled, no data read, nothing written to {workdir}",
        f"parameters: {total_params(model):,} total, {active_params(model):,} active per token"
        + ("" if run.lora is None else f", {trainable_params(model):,} trained (LoRA adapters)"),
        f"batch: {' and '.join(sorted(first))} {shape((run.batch_size, rows))} per step"
        + (f" ({run.grad_accumulation} micro-batches of {shape((micro, rows))})" if run.grad_accumulation > 1 else "")
        + f"; {shape(first['tokens'].shape)} from this process, {shape(per_device)} per device"
        + f"; {run.steps:,} steps of {run.batch_size * run.seq_len:,} tokens",
        f"mesh: {mesh} | {plural(strategy.num_devices, jax.devices()[0].platform + ' device')}, "
        f"{plural(processes, 'process')} | {parallel}",
    ]
    print("\n".join(lines), file=out, flush=True)


def _train(
    config: Config, workdir: Path, fresh: bool, parallel: str, out: TextIO, interrupts: Interrupts, wandb: str | None
) -> dict:
    run, processes, main = config.train, jax.process_count(), jax.process_index() == 0
    say = (lambda text: print(text, file=out, flush=True)) if main else (lambda text: None)
    began = time.perf_counter()
    model, strategy = plan(config, workdir, fresh=fresh, parallel=parallel)
    interrupts.check_before_training()
    tokenizer, train_rows, eval_rows = load_data(config, workdir, fresh=fresh, say=say)
    interrupts.check_before_training()

    if main:
        aside = run_dir.prepare(workdir, config, tokenizer, fresh=fresh)
        if aside is not None:
            say(f"--fresh: the earlier run's files are in {aside}")
    if processes > 1:
        multihost_utils.sync_global_devices("zoo: work directory ready")
    shard = dict(shard_index=jax.process_index(), shard_count=processes)
    data = batches(train_rows, run.batch_size, seed=run.seed, **shard)
    sinks = [] if wandb is None else [WandbRun(workdir, dataclasses.asdict(config), project=wandb or None)]
    report = Report(
        workdir, run.steps, out, enabled=main, title=f"{workdir.name}: {total_params(model) / 1e6:.1f}M params", sinks=sinks
    )
    checkpoints = Checkpoints(workdir / CHECKPOINTS, keep=run.keep_checkpoints)
    try:
        if run.lora is not None:
            load_frozen(strategy, model, run)
        restored = restore_latest(checkpoints, strategy, data, say)
        state, start = restored if restored else (initial_state(strategy, run), 0)
        report.resume(start)
        devices, platform = strategy.num_devices, jax.devices()[0].platform
        trained = "" if run.lora is None else f" ({trainable_params(model):,} of them LoRA adapters, on a frozen {run.init_from})"
        say(
            f"{total_params(model):,} parameters{trained} | {plural(devices, platform + ' device')}, {plural(processes, 'process')}, "
            f"{parallel} | " + (f"resumed from step {start}" if start else "starting at step 0")
        )
        peak = peak_flops()
        say(f"MFU against {peak[0] / 1e12:.0f} TFLOP/s per device ({peak[1]})" if peak else "MFU: no peak FLOP/s known for this device")
        sizes = dict(strategy.mesh.shape) if isinstance(strategy, ShardedJit) else {"data": strategy.num_devices}
        warning = preflight.memory_plan_warning(config, sizes, jax.devices()[0])  # before the step compiles
        if warning:
            say(f"warning: {warning}")
        loop = Loop(config, strategy, data, eval_rows, shard, report, checkpoints, peak, flops_per_token(model, run.seq_len), start)
        last = loop.run(state, interrupts)
    finally:
        checkpoints.close()
        report.close()
    report.summary(last, tokens=run.steps * run.batch_size * run.seq_len, seconds=time.perf_counter() - began, resumed_from=start)
    return last


@dataclasses.dataclass
class Loop:
    """The step loop of one run: steps, logs, evaluations and checkpoints, until the last step,
    a divergence (Diverged) or a signal (Interrupted, after saving the state it reached)."""

    config: Config
    strategy: ShardedJit | Pmap
    data: object  # the grain iterator of training batches
    eval_rows: TokenRows
    shard: dict
    report: Report
    checkpoints: Checkpoints
    peak: tuple[float, str] | None
    model_flops: int
    resumed_from: int  # the step it starts at: 0, or the checkpoint it resumed from

    def evaluate(self, state) -> float:
        run = self.config.train
        loader = batches(self.eval_rows, run.batch_size, seed=0, **self.shard)
        results = [self.strategy.evaluate(state, self.strategy.put_batch(next(loader))) for _ in range(run.eval_batches)]
        results = jax.device_get(results)
        return float(sum(r["loss"] * r["tokens"] for r in results) / sum(r["tokens"] for r in results))

    def run(self, state, interrupts: Interrupts) -> dict:
        run, strategy, schedule, start = self.config.train, self.strategy, learning_rate(self.config.train), self.resumed_from
        last, saved, metrics = {}, start, None  # saved: the step whose state is on disk (0: none)
        timed, totals, done = 0, None, start  # timed: the steps that `totals` sums
        pace = Pace()
        for step in range(start, run.steps):
            signum = interrupts.requested()
            if signum is not None:
                self._stop(state, done, saved, totals, timed, metrics)
                raise Interrupted(signum, done, saved=done or None)  # step 0 is never saved
            if step == start:
                compiling, cache_before = Phase(self.report.say, "compiling the training step"), compile_cache.lookups()
            state, metrics = strategy.step(state, strategy.put_batch(next(self.data)))
            totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)  # stays on device
            timed, done = timed + 1, step + 1
            if step == start:  # the compiled program's first run: the pace is taken from here on
                jax.block_until_ready(metrics)
                hits, misses = (now - before for now, before in zip(compile_cache.lookups(), cache_before))
                compiling.done(("loaded from the compile cache" if hits and not misses else "compiled") + f", and ran step {done}")
                pace.start(compiling.elapsed)
            else:
                pace.stepped()
            logging = done % run.log_every == 0 or done == run.steps
            saving = done % run.checkpoint_every == 0 or done == run.steps
            if not (logging or saving):
                continue
            interval = self._interval(totals, timed, done, saved, metrics)
            if saving:
                self.checkpoints.save(done, strategy.to_saved(state), self.data)
                saved = done
            if logging:
                seconds_per_step = pace.lap()
                last = self._record(interval, done, schedule(step), run.batch_size * run.seq_len / seconds_per_step)
                if done % run.eval_every == 0 or done == run.steps:
                    last["eval_loss"] = self.evaluate(state)
                    last["eval_perplexity"] = math.exp(min(last["eval_loss"], 50.0))
                self.report.log(last, eta_seconds=pace.eta(run.steps - done))
                pace.resume()  # the evaluation and the logging are not steps
                timed, totals = 0, None
        return last

    def _interval(self, totals, timed: int, done: int, saved: int, latest: dict) -> dict:
        """The means of the metrics since the last log; Diverged if the loss or a parameter is not
        finite (`latest`: the metrics of the last step, whose parameters are the ones to count)."""
        interval = {name: np.asarray(value) / timed for name, value in jax.device_get(totals).items()}
        if math.isfinite(interval["loss"]) and not interval["nonfinite_params"]:
            return interval
        kept = f"the last good checkpoint (step {saved}) is kept" if saved else "no checkpoint was written"
        advice = "Lower train.learning_rate or check the data."
        if saved and saved == self.resumed_from:  # nothing saved since the resume: the checkpoint may be at fault
            before = [s for s in self.checkpoints.all_steps() if s < saved]
            advice = (
                f"It resumed from checkpoint {saved}; if that checkpoint is at fault, move "
                f"{self.checkpoints.step_dir(saved)} out of the way and rerun to resume from "
                + (f"checkpoint {before[-1]}" if before else "step 0") + f". Otherwise: {advice[0].lower()}{advice[1:]}"
            )
        raise Diverged(
            f"training diverged by step {done}: the loss is {interval['loss']:.4g} and "
            f"{int(jax.device_get(latest['nonfinite_params'])):,} parameter values are not finite; stopping ({kept}). {advice}"
        )

    def _record(self, interval: dict, done: int, lr, tokens_per_second: float) -> dict:
        record = {  # loss, z_loss and grad_norm are means over the steps since the last log
            "step": done,
            "loss": float(interval["loss"]),
            "learning_rate": float(lr),
            "grad_norm": float(interval["grad_norm"]),
            "tokens_per_second": tokens_per_second,
        }
        if self.config.train.z_loss:
            record["z_loss"] = float(interval["z_loss"])
        for name in ("moe_balance_loss", "moe_z_loss", "drop_fraction"):
            if name in interval:
                record[name] = float(interval[name])
        if "expert_load" in interval:  # each expert's share of the routed tokens
            record["expert_load"] = [round(float(share), 4) for share in interval["expert_load"]]
        if self.peak:
            record["mfu"] = self.model_flops * tokens_per_second / (self.peak[0] * self.strategy.num_devices)
        return record

    def _stop(self, state, done: int, saved: int, totals, timed: int, latest: dict | None) -> None:
        """Saves the state reached, unless it is on disk already (Diverged if it is not finite)."""
        if done > saved:
            if totals is not None:
                self._interval(totals, timed, done, saved, latest)
            self.checkpoints.save(done, self.strategy.to_saved(state), self.data)
