"""Token rows for training: documents packed into fixed-length rows, batched by grain.

Each row holds several documents (each wrapped in BOS ... EOS) told apart by segment
ids, with positions restarting at every document, so attention never crosses one. A
document longer than the space left continues in the next row.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import grain
import numpy as np

from zoo.tokenizer import BOS, EOS, PAD


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """tokens, segment_ids, positions: int32 [N, L]; segment 0 marks padding."""

    tokens: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"tokens": self.tokens[index], "segment_ids": self.segment_ids[index], "positions": self.positions[index]}

    def split(self, count: int) -> tuple[PackedRows, PackedRows]:
        """The first N - count rows and the last count rows (e.g. train and held-out)."""
        first = PackedRows(*(a[: len(self) - count] for a in dataclasses.astuple(self)))
        last = PackedRows(*(a[len(self) - count :] for a in dataclasses.astuple(self)))
        return first, last


def pack(documents: Iterable[Sequence[int]], row_length: int) -> PackedRows:
    """Packs token-id documents, each as BOS + ids + EOS, into rows of `row_length`."""
    documents = [np.fromiter(ids, np.int32) for ids in documents]
    if not documents:
        raise ValueError("no documents to pack")
    lengths = np.array([len(ids) + 2 for ids in documents])
    tokens = np.empty(lengths.sum(), np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for start, ids in zip(offsets, documents):
        tokens[start] = BOS
        tokens[start + 1 : start + 1 + len(ids)] = ids
        tokens[start + 1 + len(ids)] = EOS
    owner = np.repeat(np.arange(len(documents)), lengths)
    rows = -(-len(tokens) // row_length)
    padding = rows * row_length - len(tokens)
    tokens = np.pad(tokens, (0, padding), constant_values=PAD).reshape(rows, row_length)
    owner = np.pad(owner, (0, padding), constant_values=-1).reshape(rows, row_length)

    starts = np.ones_like(owner, bool)
    starts[:, 1:] = owner[:, 1:] != owner[:, :-1]  # each document's first token in the row
    segment_ids = np.cumsum(starts, axis=1).astype(np.int32)
    segment_ids[owner == -1] = 0
    index = np.broadcast_to(np.arange(row_length), owner.shape)
    positions = (index - np.maximum.accumulate(np.where(starts, index, 0), axis=1)).astype(np.int32)
    return PackedRows(tokens, segment_ids, positions)


def batches(
    rows: PackedRows, batch_size: int, *, seed: int, shard_index: int = 0, shard_count: int = 1
) -> grain.DatasetIterator:
    """An endless iterator of {tokens, segment_ids, positions} batches [batch_size, L].

    Each process reads its own shard of rows (every shard_count-th row); every epoch is
    shuffled differently from `seed`. The iterator's state can be saved and restored.
    """
    shard = grain.MapDataset.source(rows).slice(slice(shard_index, None, shard_count))
    if len(shard) < batch_size:
        raise ValueError(
            f"the data has {len(shard)} rows for this process, fewer than one batch of {batch_size}; "
            "use more data, a smaller batch or shorter rows"
        )
    return iter(shard.shuffle(seed=seed).repeat().batch(batch_size, drop_remainder=True))
