"""What the attention code tells the log: each notice once per process, on the "zoo.attention" logger.

The kernels say which one "auto" picked and when a fused kernel hands a call to the
chunked one; the scripts print these lines on stderr (zoo.console.show_kernel_choices).
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger("zoo.attention")


@functools.cache
def say_once(message: str) -> None:
    """Logs `message` at INFO the first time it is said in this process (`say_once.cache_clear()` forgets)."""
    log.info(message)
