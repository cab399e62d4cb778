"""SentencePiece tokenizers: train on text, save, load, encode, decode.

Ids 0-3 are reserved: pad 0, bos 1, eos 2, unk 3. Trained models keep text exactly
(no whitespace folding, newlines are tokens, unknown bytes fall back to byte tokens),
so decode(encode(text)) == text for source code too.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

PAD, BOS, EOS, UNK = 0, 1, 2, 3


class Tokenizer:
    """text <-> token ids with a SentencePiece model (given as its serialized bytes)."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        try:
            proto = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no tokenizer model at {path}") from None
        if not proto:
            raise ValueError(f"{path} is empty, not a sentencepiece model")
        try:
            return cls(proto)
        except RuntimeError:
            raise ValueError(f"{path} is not a sentencepiece model (sentencepiece cannot parse its {len(proto):,} bytes)") from None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, max_lines: int = 200_000, seed: int = 0) -> Tokenizer:
        """A BPE model of `vocab_size` pieces learned from up to `max_lines` lines of `texts`."""
        lines = [line for text in texts for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError("cannot train a tokenizer on empty text")
        random.Random(seed).shuffle(lines)
        proto = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines[:max_lines]),
                model_writer=proto,
                vocab_size=vocab_size,
                model_type="bpe",
                pad_id=PAD,
                bos_id=BOS,
                eos_id=EOS,
                unk_id=UNK,
                byte_fallback=True,
                user_defined_symbols=["\n", "    "],
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                split_digits=True,
                num_threads=2,
                minloglevel=2,
            )
        except RuntimeError as error:
            raise ValueError(f"cannot train a {vocab_size}-piece tokenizer on this text: {error}") from None
        return cls(proto.getvalue())

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=os.cpu_count() or 1)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])
