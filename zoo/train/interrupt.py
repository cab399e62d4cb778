"""SIGINT (Ctrl-C) and SIGTERM as a request to stop at the next safe point, not an exception.

An exception raised wherever the signal lands (inside a compile, a garbage-collection
callback, a checkpoint thread) can be swallowed or leave the process half torn down;
a flag that the run loop reads between steps cannot. A second signal stops at once: the
checkpoints already written stay whole, since saves are atomic.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run stopped on a signal after `step` steps (None: before training began); `saved` is
    the step of the newest checkpoint on disk (None or 0: none)."""

    def __init__(self, signum: int, step: int | None, *, saved: int | None = None):
        self.signum, self.step, self.saved = signum, step, saved
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.step is None:
            return "interrupted before training began; no checkpoint was written. Rerun the same command to start"
        kept = f"checkpoint {self.saved} holds it" if self.saved == self.step else (
            f"the last checkpoint is step {self.saved}" if self.saved else "no checkpoint was written")
        return f"interrupted at step {self.step}; {kept}. Rerun the same command to resume"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class Interrupts:
    """While active (a context manager in the main thread), SIGINT and SIGTERM set a flag."""

    def __init__(self, out=sys.stderr):
        self.out = out
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: the user wants out now
            print(f"{signal.Signals(signum).name} again: stopping at once; the checkpoints written so far are kept",
                  file=self.out, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"{signal.Signals(signum).name}: stopping at the next safe point (again to stop at once)", file=self.out, flush=True)

    def requested(self) -> int | None:
        """The signal that asks this run to stop, agreed by every process (a collective when
        there are several, so all stop after the same step); None to go on."""
        if jax.process_count() == 1:
            return self.signum
        signals = multihost_utils.process_allgather(np.int32(self.signum or 0))
        return int(np.max(signals)) or None

    def check_before_training(self) -> None:
        """Raises Interrupted (before step 1) when a signal asks this run to stop."""
        signum = self.requested()
        if signum is not None:
            raise Interrupted(signum, None)
