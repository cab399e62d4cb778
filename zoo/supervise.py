"""One process of a multi-process run, watched from outside so that losing another ends it cleanly.

When a process of a multi-process jax run dies, the others learn it in one of two ways:
a collective with it fails (a Python exception, then a shutdown that may hang), or jax's
coordination service notices the missed heartbeats, or the lost coordinator, and aborts
them from C++ with a stack trace. Neither can be caught inside the process. So each
host's train.py runs the real work in a child process and watches it (passing SIGINT and
SIGTERM on, and taking the child with it when killed): the child's
output passes through, except the failure report of a lost peer, which becomes one
line, and a child that has lost a peer is stopped after GRACE_SECONDS.

A lost peer is noticed at once when the survivor is in a collective with it (every
training step is one), and within the heartbeat timeout otherwise (HEARTBEAT_SECONDS by
default; train.py's --heartbeat).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

CHILD = "ZOO_SUPERVISED"  # set in the child's environment
HEARTBEAT_SECONDS = 30  # by default, jax's coordination service declares a silent process gone after this
GRACE_SECONDS = 5  # a child that lost a peer gets this long to exit by itself
# What the failure of a lost peer looks like in the child's stderr.
PEER_LOST = re.compile(
    r"Connection closed by peer|Connection reset by peer|another task died|detected fatal errors|Socket closed"
    r"|heartbeat|UNAVAILABLE: .*(coordination|Connection refused)|Gloo .* failed",
    re.IGNORECASE,
)
# Where a failure report starts: a Python traceback, or a log line of jax's C++ runtime.
REPORT_START = re.compile(r"^(Traceback \(most recent call last\)|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ )")


def _die_with_parent() -> None:
    """In the child before it starts: have Linux kill it when the watching process dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child outlives a killed supervisor
        pass


def supervised() -> bool:
    """Whether this process is the child doing the work (so it must not supervise again)."""
    return os.environ.get(CHILD) == "1"


class Relay:
    """Passes the child's stderr on, holding back each failure report (a traceback or C++ log
    lines, and what follows) for GRACE_SECONDS: long enough to see whether a lost peer
    caused it, in which case it is dropped for the one line that says so."""

    def __init__(self, stream):
        self.stream, self.lock = stream, threading.Lock()
        self.held: list[tuple[float, str]] = []
        self.peer_lost = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.stream:
            with self.lock:
                if self.held or REPORT_START.match(line):
                    self.held.append((time.monotonic(), line))
                    if PEER_LOST.search(line):
                        self.peer_lost.set()
                else:
                    sys.stderr.write(line)
                    sys.stderr.flush()

    def flush(self, older_than: float = 0.0) -> None:
        """Writes the held lines out if the first is older than `older_than` seconds and no lost peer is known."""
        with self.lock:
            if self.held and not self.peer_lost.is_set() and time.monotonic() - self.held[0][0] >= older_than:
                sys.stderr.writelines(line for _, line in self.held)
                sys.stderr.flush()
                self.held = []


def run_child(argv: Sequence[str], *, process_id: int | None, num_processes: int, workdir: Path) -> int:
    """Runs `python argv...` as the child and returns the exit status train.py should end with."""
    child = subprocess.Popen(
        [sys.executable, *argv], env={**os.environ, CHILD: "1"}, stderr=subprocess.PIPE, text=True,
        process_group=0, preexec_fn=_die_with_parent,  # signals reach it through here only, once each
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _: child.send_signal(signum))
    relay = Relay(child.stderr)
    while child.poll() is None:
        if relay.peer_lost.wait(timeout=0.5):
            try:
                child.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
            break
        relay.flush(older_than=GRACE_SECONDS)
    child.wait()
    relay.thread.join(timeout=GRACE_SECONDS)
    if relay.peer_lost.is_set():
        from zoo.runs import latest_step  # only now: it loads jax and orbax

        step = latest_step(workdir)
        resume = f"resume from step {step}" if step else "start again (no checkpoint was written)"
        print(
            f"train.py: error: another process of this {num_processes}-process run is gone; process {process_id} of "
            f"{num_processes} is stopping. Rerun every process to {resume}",
            file=sys.stderr, flush=True,
        )
        return 1
    relay.flush()
    return child.returncode if child.returncode >= 0 else 128 - child.returncode
