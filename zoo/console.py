"""What the command-line scripts print besides their results: one-line errors and the attention kernel's choice."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Iterator, TextIO

KERNEL_LOGGER = "zoo.attention"  # where zoo.layers.attention says which kernel "auto" picked, and any fallback


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, `PROG: error: MESSAGE`, with exit status 2
    and no usage block (`--help` still shows it)."""

    def error(self, message: str):
        self.fail(message)

    def fail(self, message: str, status: int = 2):
        """Exits with `status` after `PROG: error: MESSAGE` as one line (the message's lines joined)."""
        self.exit(status, f"{self.prog}: error: {' '.join(message.split())}\n")


@contextlib.contextmanager
def show_kernel_choices(stream: TextIO | None = None) -> Iterator[None]:
    """While open, prints the attention kernel's choices to `stream` (default: stderr) as they
    are made, one line per distinct choice, e.g. `attention: auto picked xla_attention on cpu`.

    The "zoo.attention" logger is set to INFO and kept from passing these lines on to
    handlers of the root logger (which libraries such as absl set up), so each shows once;
    its settings are restored on exit.
    """
    logger = logging.getLogger(KERNEL_LOGGER)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def first_line(error: Exception) -> str:
    """An error's first line (at most 300 characters), or its type's name when it says nothing."""
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


@contextlib.contextmanager
def closable_output() -> Iterator[None]:
    """Lets the reader of stdout stop early (`| head`): what is left unprinted is dropped quietly,
    with exit status 1 as Unix tools give, instead of a BrokenPipeError traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's own flush is quiet
        sys.exit(1)
