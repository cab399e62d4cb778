"""Weights & Biases logging of a run (RUN/wandb/), through the wandb package when the user asks for it.

Each record of metrics.jsonl is logged at its step under the tag names of TensorBoard's
(zoo.train.tensorboard.scalars): eval/loss, eval/perplexity, train/NAME for every other number,
moe/expert_load/E per expert. wandb's own settings hold: WANDB_MODE (online, offline, disabled),
WANDB_API_KEY or `wandb login`, WANDB_PROJECT, WANDB_ENTITY, WANDB_NAME (else the run directory's
name), WANDB_INIT_TIMEOUT (how long an unreachable server may hold up the first log line). wandb
is kept quiet and away from the training run's stdout and stderr.

wandb keeps its files in RUN/wandb/ (an offline run's in RUN/wandb/offline-run-*/, for `wandb sync`),
and RUN/wandb/run.json holds the wandb run's id and the last step logged to it, so a resumed
run goes on logging to the same wandb run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from zoo.console import first_line
from zoo.rundir import WANDB, write_atomically
from zoo.train.tensorboard import scalars

INSTALL = 'pip install -e ".[wandb]"'
DIRECTORY = WANDB  # under the run directory; wandb names it so itself
STATE = "run.json"  # in DIRECTORY: {"id": the wandb run's id, "step": the last step logged to it}


def check_available() -> str | None:
    """None when wandb can be imported, else a one-line message saying how to install it."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return f"--wandb needs the wandb package; {INSTALL}"
    return None


class WandbRun:
    """Logs metrics records to a wandb run, opening it at the first record.

    A resumed run (`purge_step` set: the step it resumed from, plus one) logs to the same
    wandb run again, whose id RUN/wandb/run.json keeps. A wandb run's history only grows: wandb
    cannot drop or replace steps it has (rewinding a run, `wandb.init(resume_from=...)`, is a
    preview feature of the online service only), and it ignores a step below its last with a
    warning each. So the steps wandb already has keep their values from before the interruption,
    the rerun's records of them are not sent, and `write` says so once; metrics.jsonl and
    TensorBoard hold the rerun's values. The steps wandb has: online, the server's (the resumed
    run's starting step); offline, where no server is asked, those up to run.json's step.

    When wandb is not installed, not logged in (online), or its run fails to start, `write`
    returns one line saying why and how to fix it, and nothing is logged.
    """

    def __init__(self, workdir: Path, config_dict: dict, *, project: str | None = None):
        self.workdir, self.config_dict, self.project = workdir, config_dict, project
        self.directory = workdir / DIRECTORY
        self.purge_step: int | None = None
        self._run = None
        self._failed = False  # a note said why nothing is logged
        self._next_step = 0  # the first step wandb does not have yet

    def _fail(self, why: str) -> str:
        self._failed = True
        return f"wandb logs nothing: {why}"

    def _open(self, step: int) -> str | None:
        """Starts (or resumes) the wandb run, its first record at `step`; a note when it cannot,
        or when wandb already has steps this run logs again."""
        try:
            import wandb
        except ImportError:
            return self._fail(f"the wandb package is not installed; {INSTALL}")
        state_path = self.directory / STATE
        try:
            state = json.loads(state_path.read_text()) if state_path.exists() else {}
            # For the whole process (wandb.login reads them too): no wandb lines, stdout and stderr left alone.
            settings = wandb.setup(wandb.Settings(silent=True, console="off")).settings
            if settings.mode == "disabled":
                return self._fail("WANDB_MODE is disabled")
            if settings.mode not in ("offline", "dryrun") and not wandb.login(prompt=False, verify=False):
                return self._fail("not logged in; run `wandb login` (or set WANDB_API_KEY), or set WANDB_MODE=offline")
            self._run = wandb.init(
                project=self.project, dir=self.workdir, id=state.get("id"), resume="allow",
                name=None if "WANDB_NAME" in os.environ else self.workdir.name,
                config=self.config_dict, allow_val_change=True, reinit="create_new",
            )
        except Exception as error:  # wandb raises many kinds (UsageError, CommError, ...); none may stop training
            return self._fail(f"its run did not start ({first_line(error)}); see `wandb login` or set WANDB_MODE=offline")
        self.directory.mkdir(exist_ok=True)  # wandb's, unless it found an old RUN/.wandb to use instead
        self._next_step = max(self._run.starting_step, state.get("step", -1) + 1)
        first = step if self.purge_step is None else self.purge_step  # the first step this run logs
        if first < self._next_step:
            return (
                f"wandb run {self._run.id} already has steps up to {self._next_step - 1}, which wandb cannot replace: "
                f"it keeps their values from before and logs this run's records from step {self._next_step} on"
            )
        return None

    def write(self, record: dict) -> str | None:
        if self._failed:
            return None
        step = record["step"]
        note = self._open(step) if self._run is None else None
        if self._run is not None and step >= self._next_step:
            self._run.log(scalars(record), step=step, commit=True)  # commit: written now, as log lines are seldom
            self._next_step = step + 1
            write_atomically(self.directory / STATE, json.dumps({"id": self._run.id, "step": step}).encode())
        return note

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
