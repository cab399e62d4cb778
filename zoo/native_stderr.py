"""Reading what native libraries log: lines that C++ code writes straight to file descriptor 2.

Such libraries (sentencepiece's trainer, for one) report their progress only as log lines on
stderr, out of Python's reach. `lines_of_native_stderr` points descriptor 2 at a pipe for
the duration of a `with` block and hands each line to a callback, which consumes it or lets
it through to the real stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def lines_of_native_stderr(on_line: Callable[[str], bool]) -> Iterator[None]:
    """Inside the block, every line written to descriptor 2 goes to `on_line` (on another
    thread); a line it returns False for is written on to the real stderr unchanged."""
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)  # descriptor 2 is now the pipe's only writer: restoring it ends the pipe

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                if not on_line(raw.decode("utf-8", errors="replace").rstrip("\n")):
                    os.write(real_stderr, raw)

    reader = threading.Thread(target=pump, name="native-stderr", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        reader.join()
        os.close(real_stderr)
