"""One process of a multi-process run, watched from outside so that losing another ends it cleanly.

When a process of a multi-process jax run dies, the others learn it in one of two ways:
a collective with it fails (a Python exception, then a shutdown that may hang), or jax's
coordination service notices the missed heartbeats, or the lost coordinator, and aborts
them from C++ with a stack trace. Neither can be caught inside the process. So each
host's train.py runs the real work in a child process and watches it: the child's
output passes through, except the failure report of a lost peer, which becomes one
line, and a child that has lost a peer is stopped after GRACE_SECONDS.

A lost peer is noticed at once when the survivor is in a collective with it (every
training step is one), and within HEARTBEAT_SECONDS otherwise.
"""

from __future__ import annotations

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
HEARTBEAT_SECONDS = 30  # jax's coordination service declares a silent process gone after this
GRACE_SECONDS = 5  # a child that lost a peer gets this long to exit by itself
# What the failure of a lost peer looks like in the child's stderr.
PEER_LOST = re.compile(
    r"Connection closed by peer|Connection reset by peer|another task died|detected fatal errors|Socket closed"
    r"|heartbeat|UNAVAILABLE: .*(coordination|Connection refused)|Gloo .* failed",
    re.IGNORECASE,
)
# Where a failure report starts: a Python traceback, or a log line of jax's C++ runtime (E/F level).
REPORT_START = re.compile(r"^(Traceback \(most recent call last\)|[EF]\d{4} \d\d:\d\d:\d\d\.\d+ )")


def supervised() -> bool:
    """Whether this process is the child doing the work (so it must not supervise again)."""
    return os.environ.get(CHILD) == "1"


def run_child(argv: Sequence[str], *, process_id: int | None, num_processes: int, workdir: Path) -> int:
    """Runs `python argv...` as the child and returns the exit status train.py should end with."""
    child = subprocess.Popen([sys.executable, *argv], env={**os.environ, CHILD: "1"}, stderr=subprocess.PIPE, text=True)
    signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C reaches the child too (one process group): it stops itself
    signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
    held: list[str] = []  # a failure report, held back until it is known whether a lost peer caused it
    peer_lost = threading.Event()

    def relay() -> None:
        for line in child.stderr:
            if held or REPORT_START.match(line):
                held.append(line)
                if PEER_LOST.search(line):
                    peer_lost.set()
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    while child.poll() is None:
        if peer_lost.wait(timeout=0.5):
            deadline = time.monotonic() + GRACE_SECONDS
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if child.poll() is None:
                child.kill()
            break
    child.wait()
    reader.join(timeout=GRACE_SECONDS)
    if peer_lost.is_set() or child.returncode < 0 and any(PEER_LOST.search(line) for line in held):
        who = f"process {process_id} of {num_processes}" if process_id is not None else "this process"
        from zoo.runs import latest_step  # only now: it loads jax and orbax

        step = latest_step(workdir)
        resume = f"resume from step {step}" if step else "start again (no checkpoint was written)"
        print(
            f"train.py: error: another process of this {num_processes}-process run is gone; {who} is stopping. "
            f"Rerun every process to {resume}",
            file=sys.stderr, flush=True,
        )
        return 1
    sys.stderr.writelines(held)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode

