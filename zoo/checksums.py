"""A checksum of every file of a committed checkpoint, so silent damage (flipped or lost bytes)
is told apart from a checkpoint that is whole but does not fit what reads it.

The manifest `checksums.json` lies in the step directory beside orbax's items: {relative
path: [size, crc32]}. It is written after the checkpoint is complete, atomically; a
checkpoint without one (older, or cut off before it was written) cannot be verified.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

MANIFEST = "checksums.json"
CHUNK = 1 << 22


def crc32(path: Path) -> int:
    value = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            value = zlib.crc32(chunk, value)
    return value


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(step_dir: Path) -> None:
    """Records the size and CRC-32 of every file under `step_dir`."""
    entries = {str(p.relative_to(step_dir)): [p.stat().st_size, crc32(p)] for p in _files(step_dir)}
    partial = step_dir / (MANIFEST + ".partial")
    partial.write_text(json.dumps(entries, indent=0))
    os.replace(partial, step_dir / MANIFEST)


def damage(step_dir: Path) -> str | None:
    """What is wrong with the files of `step_dir` against its manifest ("file X is missing",
    "the bytes of X changed", ...), None when all match. Raises FileNotFoundError when
    there is no readable manifest, so nothing can be said."""
    try:
        entries = json.loads((step_dir / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"no readable {MANIFEST} in {step_dir}") from error
    for name, (size, checksum) in entries.items():
        path = step_dir / name
        if not path.is_file():
            return f"its file {name} is missing"
        if path.stat().st_size != size:
            return f"its file {name} has {path.stat().st_size:,} bytes, {size:,} when written"
        if crc32(path) != checksum:
            return f"the bytes of its file {name} changed since it was written (checksum mismatch)"
    return None


def verified(step_dir: Path) -> bool | None:
    """True when the files match the manifest, False when they do not, None without a manifest."""
    try:
        return damage(step_dir) is None
    except FileNotFoundError:
        return None
