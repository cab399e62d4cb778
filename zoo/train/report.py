"""What a run reports: a progress line per logged step, metrics.jsonl, and a loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from zoo.train import plot
from zoo.runs import LOSS_CURVE, METRICS


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = width * done // total
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Report:
    """Writes the run's logs; a process with `enabled` False (not process 0) writes nothing."""

    def __init__(self, workdir: Path, total_steps: int, out: TextIO, *, enabled: bool):
        self.workdir, self.total_steps, self.out, self.enabled = workdir, total_steps, out, enabled
        self._file = (workdir / METRICS).open("a") if enabled else None

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.out, flush=True)

    def log(self, record: dict, eta_seconds: float) -> None:
        """Appends one step's metrics (a dict with at least step and loss) and prints its line."""
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
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

    def close(self) -> None:
        """Closes metrics.jsonl and draws loss.png from all of it (resumed runs included)."""
        if not self.enabled:
            return
        self._file.close()
        records = [json.loads(line) for line in (self.workdir / METRICS).read_text().splitlines() if line.strip()]
        evals = [r for r in records if "eval_loss" in r]
        plot.loss_curve(
            self.workdir / LOSS_CURVE,
            [r["step"] for r in records],
            [r["loss"] for r in records],
            [r["step"] for r in evals],
            [r["eval_loss"] for r in evals],
        )
