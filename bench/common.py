"""What every benchmark shares: its command-line flags, timing by the median, and printing figures."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time
from typing import Any, Callable

import jax


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes; `doc` (the script's docstring) is its help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--small", action="store_true", help="small shapes that run in seconds on a CPU: a smoke test, not a measurement")
    add("--steps", type=int, default=10, help="timed repetitions; the median is reported (default 10)")
    add("--warmup", type=int, default=2, help="untimed repetitions after the first, compiling one (default 2)")
    add("--reference", action="store_true", help="also run the workload through Hugging Face transformers on PyTorch")
    add("--reference-steps", type=int, default=3, help="timed repetitions of the (slower) reference (default 3)")
    return parser


def log_attention_choices() -> None:
    """Has zoo print the attention kernel it runs where that is not the one named: "auto"'s pick,
    and a fused kernel's fallback to chunked (with the reason), so no figure hides a fallback."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("  [%(name)s] %(message)s"))
    log = logging.getLogger("zoo.attention")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds of the first call (compilation, if any, included) and the median of the timed calls."""

    first: float
    median: float
    result: Any  # what the last call returned


def timed(fn: Callable[[], Any], *, steps: int, warmup: int, wait: Callable[[Any], Any] = jax.block_until_ready) -> Timing:
    """Calls fn() once, `warmup` more times untimed, then `steps` timed times; `wait(result)`
    returns once the call's work is done (jax's asynchronous dispatch, CUDA streams)."""

    def call() -> tuple[float, Any]:
        start = time.perf_counter()
        result = fn()
        wait(result)
        return time.perf_counter() - start, result

    first, result = call()
    for _ in range(warmup):
        call()
    times = []
    for _ in range(max(steps, 1)):
        seconds, result = call()
        times.append(seconds)
    return Timing(first, statistics.median(times), result)


def show(title: str, rows: dict[str, str]) -> None:
    """Prints a titled block of `name  value` lines, names aligned."""
    print(f"\n{title}")
    width = max(len(name) for name in rows)
    for name, value in rows.items():
        print(f"  {name:<{width}}  {value}")


def heading(title: str, small: bool) -> str:
    """A block's title, marked as a smoke test when the shapes are --small."""
    return f"{title} (--small: a smoke test of the script, not a measurement)" if small else title


def flops(value: float) -> str:
    """FLOP/s in TFLOP/s, or GFLOP/s when small (CPUs)."""
    return f"{value / 1e12:,.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:,.2f} GFLOP/s"


def bandwidth(value: float) -> str:
    """Bytes/s in TB/s, or GB/s when small."""
    return f"{value / 1e12:,.2f} TB/s" if value >= 1e12 else f"{value / 1e9:,.1f} GB/s"


def size(value: float) -> str:
    """Bytes in GB, or MB when small."""
    return f"{value / 1e9:,.2f} GB" if value >= 1e9 else f"{value / 1e6:,.2f} MB"


def seconds(value: float) -> str:
    return f"{value:,.2f} s" if value >= 1 else f"{value * 1e3:,.2f} ms"


def share(part: float, whole: float | None, what: str) -> str:
    """`part / whole` as a percentage `of what`, or why there is no `whole` to compare with."""
    if whole is None:
        return f"unavailable: no {what} for {jax.devices()[0].device_kind}"
    return f"{100 * part / whole:.1f}% of {what}"
