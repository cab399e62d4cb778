"""jax's persistent compilation cache, on by default for zoo's command-line programs.

A second `sample.py` on the same run, or a resumed `train.py`, then loads its compiled
programs from disk instead of compiling them again. The cache lives in
$ZOO_COMPILE_CACHE, else $XDG_CACHE_HOME/zoo/jax (default ~/.cache/zoo/jax);
ZOO_COMPILE_CACHE=off turns it off. A program that has set jax's own cache directory
keeps it.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import jax

ENVIRONMENT = "ZOO_COMPILE_CACHE"
_lookups: collections.Counter = collections.Counter()  # jax's cache_hits / cache_misses events so far
_listening = False  # whether _count is registered for them


def _count(event: str, **_) -> None:
    for outcome in ("hits", "misses"):
        if event.endswith(f"/compilation_cache/cache_{outcome}"):
            _lookups[outcome] += 1


def lookups() -> tuple[int, int]:
    """(hits, misses): the compiled programs this process found in the cache, and those it did
    not, since `enable` turned it on (0, 0 while it is off)."""
    return _lookups["hits"], _lookups["misses"]


def default_directory() -> Path | None:
    """Where the cache goes by the environment; None when ZOO_COMPILE_CACHE=off."""
    chosen = os.environ.get(ENVIRONMENT)
    if chosen is not None:
        return None if chosen.strip().lower() in ("off", "0", "none", "") else Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo" / "jax"


def enable() -> Path | None:
    """Turns the cache on (before the first compile) and returns its directory; None when it
    stays off (turned off, or a directory that cannot be made, which only loses speed)."""
    if not jax.config.jax_compilation_cache_dir:
        directory = default_directory()
        if directory is None:
            return None
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        jax.config.update("jax_compilation_cache_dir", str(directory))
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_count)
        _listening = True
    return Path(jax.config.jax_compilation_cache_dir)
