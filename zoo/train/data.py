"""Token rows for training: a token stream cut into fixed-length rows, batched by grain.

A row holds consecutive tokens, often from several documents; a new segment starts
after each document-end token, so attention never crosses documents (the model counts
positions from 0 at each segment start). A document longer than the space left
continues in the next row.
"""

from __future__ import annotations

from typing import Sequence

import grain
import numpy as np

from zoo.tokenizer import BOS, EOS


def document_stream(documents: Sequence[Sequence[int]], bos_id: int = BOS, eos_id: int = EOS) -> np.ndarray:
    """int32 [N]: every document's ids wrapped as BOS + ids + EOS, one after another."""
    documents = [np.fromiter(ids, np.int32) for ids in documents]
    lengths = np.array([len(ids) + 2 for ids in documents])
    stream = np.empty(int(lengths.sum()), np.int32)
    for start, ids in zip(np.cumsum(lengths) - lengths, documents):
        stream[start] = bos_id
        stream[start + 1 : start + 1 + len(ids)] = ids
        stream[start + 1 + len(ids)] = eos_id
    return stream


class TokenRows:
    """Rows [L] of a token stream (in memory or memory-mapped), cut on demand.

    `rows[i]` is {tokens, segment_ids}: int32 [L]. Segments count up from 1 within the
    row, a new one starting after each `document_end_id` token (one segment throughout
    when it is None). The stream's last partial row is dropped.
    """

    def __init__(
        self, stream: np.ndarray, row_length: int, document_end_id: int | None = EOS, rows: Sequence[int] | None = None
    ):
        self.stream, self.row_length, self.document_end_id = stream, row_length, document_end_id
        self.rows = range(len(stream) // row_length) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start = self.rows[index] * self.row_length
        tokens = np.asarray(self.stream[start : start + self.row_length], np.int32)
        if self.document_end_id is None:
            starts = np.zeros(self.row_length, bool)
        else:
            starts = np.concatenate([[False], tokens[:-1] == self.document_end_id])
        return {"tokens": tokens, "segment_ids": (1 + np.cumsum(starts)).astype(np.int32)}

    def split(self, count: int, seed: int) -> tuple[TokenRows, TokenRows]:
        """The rows less `count` of them drawn at random (seeded), and those `count`: a training
        set and a held-out one, each in stream order. The same seed draws the same rows."""
        held_out = np.zeros(len(self), bool)
        held_out[np.random.default_rng(seed).choice(len(self), count, replace=False)] = True
        rows = np.asarray(self.rows)
        return (
            TokenRows(self.stream, self.row_length, self.document_end_id, rows[~held_out]),
            TokenRows(self.stream, self.row_length, self.document_end_id, rows[held_out]),
        )


def batches(
    rows: TokenRows, global_batch: int, *, seed: int, shard_index: int = 0, shard_count: int = 1
) -> grain.DatasetIterator:
    """An endless iterator of this process's {tokens, segment_ids} [global_batch / shard_count, L].

    The global batches are the same however many processes share them: every epoch is
    a fresh shuffle of all rows from `seed`, cut into batches of `global_batch` rows,
    and process `shard_index` takes its contiguous block of each. The iterator's
    position can be saved and restored (see checkpoint.py).
    """
    if len(rows) < global_batch:
        raise ValueError(
            f"the data has {len(rows)} rows of {rows.row_length} tokens, fewer than one batch of {global_batch}; "
            "use more data, a smaller batch or shorter rows"
        )
    local = global_batch // shard_count
    shuffled = grain.MapDataset.source(rows).shuffle(seed=seed).repeat()
    offset = shard_index * local

    def row(k: int):  # the k-th row this process reads: row `offset + k % local` of global batch k // local
        return shuffled[(k // local) * global_batch + offset + k % local]

    return iter(grain.MapDataset.range(len(shuffled) // global_batch * local).map(row).batch(local, drop_remainder=True))
