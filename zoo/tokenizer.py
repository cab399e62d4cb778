"""Tokenizers: text <-> token ids. Two kinds meet one interface (TextTokenizer):

Tokenizer      SentencePiece, trained here or a model's tokenizer.model. Ids 0-3 are reserved
               in trained ones: pad 0, bos 1, eos 2, unk 3. Trained models keep text exactly (no
               whitespace folding, newlines are tokens, unknown bytes fall back to byte tokens),
               so decode(encode(text)) == text for source code too.
HFTokenizer    a Hugging Face tokenizer.json read by the `tokenizers` library (byte-level BPE:
               GPT-2, Llama 3, Qwen; also sentencepiece-style ones), with the bos/eos tokens of
               its tokenizer_config.json.

encode adds no special tokens (transformers' add_special_tokens=False); callers put BOS in
front themselves. decode gives special tokens' text back, so decode(encode(text)) == text.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import sentencepiece as spm
import tokenizers

from zoo.console import first_line
from zoo.native_stderr import lines_of_native_stderr

PAD, BOS, EOS, UNK = 0, 1, 2, 3


class TextTokenizer(Protocol):
    """What generation, stop strings and sample.py use of a tokenizer. bos_id/eos_id are -1 when it has none."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


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
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        max_lines: int = 200_000,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
        setting: str = "vocab_size",
    ) -> Tokenizer:
        """A BPE model of `vocab_size` pieces learned from up to `max_lines` lines of `texts`.
        A size the text cannot give is a ValueError whose advice names `setting`.

        `progress(merges, total)` is called as the merges are learned (from sentencepiece's
        log, every 100 merges); without it sentencepiece logs nothing.
        """
        lines = [line for text in texts for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError("cannot train a tokenizer on empty text")
        random.Random(seed).shuffle(lines)
        proto = io.BytesIO()
        logging = contextlib.nullcontext() if progress is None else lines_of_native_stderr(MergeLog(vocab_size, progress))
        try:
            with logging:
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
                    minloglevel=2 if progress is None else 0,
                )
        except RuntimeError as error:
            raise ValueError(f"cannot train a {vocab_size}-piece tokenizer on this text: {_size_problem(str(error), setting)}") from None
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


def _size_problem(error: str, setting: str) -> str:
    """sentencepiece's complaint about the vocabulary size, in words with advice."""
    if too_high := re.search(r"Vocabulary size too high .* value <= (\d+)", error):
        return f"it has too few distinct pieces for more than {int(too_high.group(1)):,}; lower {setting} or give it more text"
    if too_low := re.search(r"smaller than required_chars\. \d+ vs (\d+)", error):
        return f"its characters and the special tokens alone take {int(too_low.group(1)):,} pieces; raise {setting}"
    return first_line(error)


class MergeLog:
    """Reads sentencepiece's BPE trainer log (minloglevel 0) into `progress(merges, total)`.

    The merges it will make are the vocabulary less its meta pieces (special, byte and
    user-defined tokens) and its alphabet, both of which it logs before merging. Its
    warnings and errors pass through to stderr; its info lines are consumed.
    """

    ALPHABET = re.compile(r"Alphabet size=(\d+)")
    MERGED = re.compile(r"Merged: .* merges=(\d+)")

    def __init__(self, vocab_size: int, progress: Callable[[int, int], None]):
        self.vocab_size, self.progress = vocab_size, progress
        self.meta_pieces, self.total = 0, 0

    def __call__(self, line: str) -> bool:
        if re.match(r"[WEF]\d{4} ", line):
            return False
        if "Adding meta_piece" in line:
            self.meta_pieces += 1
        elif alphabet := self.ALPHABET.search(line):
            self.total = max(1, self.vocab_size - self.meta_pieces - int(alphabet.group(1)))
        elif self.total and (merged := self.MERGED.search(line)):
            self.progress(int(merged.group(1)), self.total)
        return True


class HFTokenizer:
    """text <-> token ids with a Hugging Face tokenizer.json (and its tokenizer_config.json, for
    the bos/eos tokens), given as the files' bytes, which are kept to be written back unchanged.
    `names` are the files' names for error messages (ValueError)."""

    def __init__(self, tokenizer_json: bytes, tokenizer_config: bytes | None = None, *, names=("tokenizer.json", "tokenizer_config.json")):
        self.tokenizer_json, self.tokenizer_config = tokenizer_json, tokenizer_config
        try:
            self._tk = tokenizers.Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"{names[0]} is not UTF-8 text (byte {error.start} is not): not a tokenizer.json") from None
        except Exception as error:  # the library reports every parse failure as a bare Exception
            raise ValueError(f"{names[0]} is not a tokenizer.json the tokenizers library reads: {first_line(error)}") from None
        self._tk.no_truncation()  # a tokenizer.json may carry settings for batches of fixed length
        self._tk.no_padding()
        special = _special_tokens(tokenizer_config, names[1]) if tokenizer_config is not None else {}
        self._bos, self._eos = (self._id_of(special.get(name)) for name in ("bos_token", "eos_token"))

    @classmethod
    def load(cls, path: str | Path, config_path: str | Path | None = None) -> HFTokenizer:
        """The tokenizer.json at `path`, with the tokenizer_config.json at `config_path` when given."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        config = Path(config_path).read_bytes() if config_path is not None else None
        return cls(path.read_bytes(), config, names=(str(path), str(config_path)))

    def _id_of(self, token) -> int:
        token = token.get("content") if isinstance(token, dict) else token  # an AddedToken written out
        found = self._tk.token_to_id(token) if isinstance(token, str) else None
        return -1 if found is None else found

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tk.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, special tokens included; an incomplete UTF-8 character at the end decodes to U+FFFD."""
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=False)


def _special_tokens(data: bytes, name: str) -> dict:
    """The JSON object of a tokenizer_config.json (its bos_token, eos_token, chat_template, ...)."""
    try:
        contents = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{name} is not a JSON file: {error}") from None
    if not isinstance(contents, dict):
        raise ValueError(f"{name} holds a JSON {type(contents).__name__}, not the object of a tokenizer_config.json")
    return contents
