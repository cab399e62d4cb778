"""TensorBoard event files of a run (RUN/tensorboard/), through tensorboardX when it is installed.

Each record of metrics.jsonl becomes scalars at its step: eval_loss and eval_perplexity as
eval/loss and eval/perplexity, every other number NAME as train/NAME (loss, learning_rate,
grad_norm, tokens_per_second, mfu, z_loss, moe_balance_loss, moe_z_loss, drop_fraction), and
the MoE expert_load list as one scalar per expert, moe/expert_load/E, plus a histogram
moe/expert_load of the experts' shares.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from zoo.rundir import TENSORBOARD

INSTALL = 'pip install -e ".[tensorboard]"'
EVAL_TAGS = {"eval_loss": "eval/loss", "eval_perplexity": "eval/perplexity"}
_files = itertools.count()  # tells apart event files opened within one second by one process


def scalars(record: dict) -> dict[str, float]:
    """The scalars of one metrics record, by tag (its step not among them)."""
    out = {}
    for name, value in record.items():
        if name == "step":
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[EVAL_TAGS.get(name, f"train/{name}")] = float(value)
        elif name == "expert_load" and isinstance(value, list):
            out.update({f"moe/expert_load/{e}": float(share) for e, share in enumerate(value)})
    return out


class Events:
    """Writes metrics records as TensorBoard events, opening its event file at the first one.

    `purge_step` (a resumed run: the step it resumed from, plus one) tells TensorBoard to
    drop the earlier files' events from that step on, as metrics.jsonl drops those records.
    Without tensorboardX it writes nothing; `write` returns a one-line note the first time.
    """

    def __init__(self, workdir: Path):
        self.directory = workdir / TENSORBOARD
        self.purge_step: int | None = None
        self._writer = None
        self._missing = False  # tensorboardX is not installed (found at the first write)

    def write(self, record: dict) -> str | None:
        if self._missing:
            return None
        if self._writer is None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                self._missing = True
                return f"TensorBoard events are not written (no tensorboardX); {INSTALL} to get them in {self.directory}"
            self._writer = SummaryWriter(
                str(self.directory), purge_step=self.purge_step, flush_secs=3600,
                filename_suffix=f".{os.getpid()}.{next(_files)}",
            )
        step = record["step"]
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, step)
        if isinstance(record.get("expert_load"), list) and record["expert_load"]:
            self._writer.add_histogram("moe/expert_load", np.asarray(record["expert_load"], np.float64), step)
        self._writer.flush()  # a log line is seldom: a crash loses none of them
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
