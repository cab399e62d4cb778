"""Reading training data: documents of text, or a stream of pre-tokenised ids.

Every problem with the data (a glob that matches nothing, a JSONL line without its
text field, an empty corpus) raises DataError naming the file, line or field.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.config import DataConfig
from zoo.train.corpus import stdlib_documents


class DataError(ValueError):
    """Training data that cannot be read or used."""


def expand(patterns: Sequence[str]) -> list[Path]:
    """The files each path or glob names, in sorted order; a pattern matching nothing is an error."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True))
        matches = [p for p in matches if p.is_file()]
        if not matches:
            raise DataError(f"data.paths: {pattern!r} matches no files")
        files += matches
    return files


def read_jsonl(path: Path, field: str) -> list[str]:
    """The `field` string of every JSON object in a JSONL file (blank lines skipped)."""
    texts = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise DataError(f"{path}:{number}: no string field {field!r} (set data.text_field)")
            texts.append(record[field])
    return texts


def read_documents(data: DataConfig) -> list[str]:
    """The non-empty text documents of a stdlib, text or jsonl source."""
    if data.source == "stdlib":
        documents = stdlib_documents()
    elif data.source == "text":
        documents = [p.read_text(encoding="utf-8", errors="replace") for p in expand(data.paths)]
    elif data.source == "jsonl":
        documents = [text for p in expand(data.paths) for text in read_jsonl(p, data.text_field)]
    else:
        raise DataError(f"source {data.source!r} holds token ids, not text")
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise DataError(f"the {data.source} data ({', '.join(data.paths) or 'stdlib'}) holds no text")
    return documents


def read_token_stream(data: DataConfig) -> np.ndarray:
    """The ids of a tokens source: .npy files, or flat binary of data.token_dtype, memory-mapped.

    Several files are concatenated (which copies them into memory); one is used in place.
    """
    arrays = []
    for path in expand(data.paths):
        if path.stat().st_size == 0:
            continue
        if path.suffix == ".npy":
            try:
                array = np.load(path, mmap_mode="r")
            except ValueError as error:
                raise DataError(f"{path}: not a .npy array file ({error})") from None
        else:
            dtype = np.dtype(data.token_dtype)
            if path.stat().st_size % dtype.itemsize:
                raise DataError(
                    f"{path}: {path.stat().st_size:,} bytes is not a whole number of {data.token_dtype} token ids "
                    f"({dtype.itemsize} bytes each); check data.token_dtype"
                )
            array = np.memmap(path, dtype=dtype, mode="r")
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{path}: expected a 1-D array of integer token ids, got {array.dtype} {array.shape}")
        arrays.append(array)
    if not any(a.size for a in arrays):
        raise DataError(f"the token files ({', '.join(data.paths)}) are empty")
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
