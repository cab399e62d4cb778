"""The console lines of a run's start-up: each phase said as it begins, its progress while it
runs, and its outcome with the time it took, e.g.

    training a 2048-piece tokenizer on 1,762 documents
      1,200/1,697 merges (71%, 5.0 s)
      done (6.8 s)
"""

from __future__ import annotations

import time
from typing import Callable

from zoo.train.report import clock


def duration(seconds: float) -> str:
    """'0.4 s', '12.3 s', '2:05' (minutes:seconds), '1:02:05'."""
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


class Phase:
    """One phase of the start-up, said through `say` as it is created; `progress` lines at most
    every `every` seconds (so a quick phase shows none), and `done` with the elapsed time."""

    def __init__(self, say: Callable[[str], None], what: str, *, every: float = 5.0):
        self.say, self.every = say, every
        self.began = self._last_said = time.perf_counter()
        say(what)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def progress(self, done: int, total: int, unit: str) -> None:
        now = time.perf_counter()
        if now - self._last_said >= self.every and done < total:
            self._last_said = now
            self.say(f"  {done:,}/{total:,} {unit} ({done / total:.0%}, {duration(self.elapsed)})")

    def done(self, outcome: str = "done") -> None:
        self.say(f"  {outcome} ({duration(self.elapsed)})")
