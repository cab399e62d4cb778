"""What a run reports: a progress line per logged step, metrics.jsonl, TensorBoard events (and wandb's,
when asked) and a loss-curve PNG."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence, TextIO

from zoo.rundir import LOSS_CURVE, METRICS, write_atomically
from zoo.train import plot
from zoo.train.tensorboard import Events


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = width * done // total
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Pace:
    """Seconds per training step: measured over each log interval, the first step (which
    compiles) left out, and smoothed over intervals for the ETA (an exponential moving
    average, so one slow interval, e.g. a checkpoint, moves it only part way)."""

    SMOOTHING = 0.3  # the weight of the newest interval

    def __init__(self):
        self.smoothed: float | None = None
        self._clock, self._steps, self._first_step = 0.0, 0, 0.0

    def start(self, first_step_seconds: float) -> None:
        """After the first step, whose time (compile included) stands in until a step is timed."""
        self._first_step = first_step_seconds
        self.resume()

    def resume(self) -> None:
        self._clock, self._steps = time.perf_counter(), 0

    def stepped(self) -> None:
        self._steps += 1

    def lap(self) -> float:
        """The seconds per step since `resume`, folded into the smoothed pace."""
        if not self._steps:  # nothing timed yet: only the first step ran
            return self.smoothed or self._first_step
        latest = (time.perf_counter() - self._clock) / self._steps
        self.smoothed = latest if self.smoothed is None else self.SMOOTHING * latest + (1 - self.SMOOTHING) * self.smoothed
        return latest

    def eta(self, steps_left: int) -> float:
        return steps_left * (self.smoothed or self._first_step)


class Report:
    """Writes the run's logs; a process with `enabled` False (not process 0) writes nothing."""

    def __init__(
        self, workdir: Path, total_steps: int, out: TextIO, *, enabled: bool, title: str | None = None, sinks: Sequence = ()
    ):
        """title: loss.png's (default: the run directory's name). sinks: more places for the records,
        each with `purge_step`, `write(record) -> note or None` and `close()` (e.g. a WandbRun)."""
        self.workdir, self.total_steps, self.out, self.enabled, self.title = workdir, total_steps, out, enabled, title
        self._file: TextIO | None = None  # metrics.jsonl, opened at the first record
        self.sinks = [Events(workdir), *sinks]  # TensorBoard events of the same records, when tensorboardX is installed

    def _records(self) -> list[dict]:
        """The records of metrics.jsonl; a torn or garbled line (a kill during a write) is dropped with a note."""
        path = self.workdir / METRICS
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines() if path.exists() else []
        records = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
            elif line.strip():
                self.say(f"{path}:{number} is not a whole record (cut off by a crash?); dropping it")
        return records

    def resume(self, step: int) -> None:
        """Drops the records of steps after `step` (logged before an interruption, to be run again),
        so each step appears once (the sinks are told to drop theirs as far as they can)."""
        if not self.enabled:
            return
        for sink in self.sinks:
            sink.purge_step = step + 1
        if not (self.workdir / METRICS).exists():
            return
        kept = [r for r in self._records() if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if kept:
            write_atomically(self.workdir / METRICS, text.encode())
        else:
            (self.workdir / METRICS).unlink()

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.out, flush=True)

    def log(self, record: dict, eta_seconds: float) -> None:
        """Appends one step's metrics (a dict with at least step and loss) and prints its line."""
        if not self.enabled:
            return
        if self._file is None:
            self._file = (self.workdir / METRICS).open("a")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for sink in self.sinks:
            note = sink.write(record)
            if note:
                self.say(note)
        parts = [
            f"{progress_bar(record['step'], self.total_steps)} {record['step']}/{self.total_steps}",
            f"loss {record['loss']:.3f}",
            f"lr {record['learning_rate']:.2e}",
            f"{record['tokens_per_second']:,.0f} tok/s",
        ]
        if "mfu" in record:
            parts.append(f"MFU {record['mfu']:.1%}")
        if "expert_load" in record:
            parts.append(f"expert load {min(record['expert_load']):.2f}-{max(record['expert_load']):.2f}")
        if record.get("drop_fraction"):
            parts.append(f"dropped {record['drop_fraction']:.1%}")
        parts.append(f"ETA {clock(eta_seconds)}")
        if "eval_loss" in record:
            parts.append(f"eval {record['eval_loss']:.3f} (ppl {record['eval_perplexity']:.1f})")
        self.say(" | ".join(parts))

    def summary(self, record: dict, *, tokens: int, seconds: float, resumed_from: int = 0) -> None:
        """One line at the end of a run that reached its last step: its steps, final losses (`record`,
        the last logged metrics, else metrics.jsonl's last record), tokens seen, wall time, directory."""
        if not self.enabled:
            return
        record = record or next(reversed(self._records()), {})  # empty when there was nothing left to run
        parts = [f"done: {self.total_steps:,} steps" + (f" (resumed from step {resumed_from})" if resumed_from else "")]
        if isinstance(record.get("loss"), (int, float)):
            parts.append(f"train loss {record['loss']:.3f}")
        if isinstance(record.get("eval_loss"), (int, float)):
            parts.append(f"eval loss {record['eval_loss']:.3f}")
        parts += [f"{tokens:,} tokens seen", f"wall time {clock(seconds)}", f"run in {self.workdir}"]
        self.say(" | ".join(parts))

    def close(self) -> None:
        """Closes metrics.jsonl and draws loss.png from all of it (resumed runs included), if it holds any."""
        if not self.enabled:
            return
        if self._file is not None:
            self._file.close()
        for sink in self.sinks:
            sink.close()
        records = [r for r in self._records() if isinstance(r.get("loss"), (int, float))]
        if not records:
            return
        evals = [r for r in records if isinstance(r.get("eval_loss"), (int, float))]
        try:
            plot.loss_curve(
                self.workdir / LOSS_CURVE,
                [r["step"] for r in records],
                [r["loss"] for r in records],
                [r["step"] for r in evals],
                [r["eval_loss"] for r in evals],
                title=self.title,
            )
        except (OSError, ValueError) as error:  # the plot is a convenience: it never fails a run
            self.say(f"{LOSS_CURVE} was not drawn: {error}")
