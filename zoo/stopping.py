"""Each row's text while it is generated: where a stop string ends it, and how much is final.

A stop string ends a row's text just before it; the row keeps the tokens whose text lies
wholly before the stop string, so decoding them gives a prefix of the text. While a row
runs, its text is final up to a trailing incomplete UTF-8 character and any tail that
could still turn out to begin a stop string; the final parts reported for a row add up
to its text. This relies on the decoding of a prefix of the tokens being a prefix of the
decoding of all of them, up to incomplete characters, as with SentencePiece.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from zoo.tokenizer import Tokenizer

INCOMPLETE = "\ufffd"  # what decoding makes of a UTF-8 character whose bytes have not all come


class RowTexts:
    """The texts of a batch of rows, fed each row's tokens so far (host side, between decode chunks).

    After the last `update`, `tokens[row]` and `texts[row]` are the row's result and
    `stopped[row]` says whether a stop string ended it.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str], batch: int):
        self.tokenizer, self.stop_strings = tokenizer, tuple(stop_strings)
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.texts = [""] * batch
        self.stopped = np.zeros(batch, bool)
        self._ended = [False] * batch
        self._reported = [0] * batch  # characters of the text already returned by update

    def update(self, row: int, tokens: Sequence[int], ended: bool) -> str:
        """Takes the row's tokens so far (`ended`: no more will come); returns the text that
        became final since the last call."""
        if self._ended[row]:
            return ""
        tokens = [int(t) for t in tokens]
        text = self.tokenizer.decode(tokens)
        cut = self._find(text)
        if cut is not None:
            text = text[:cut]
            tokens = tokens[: self._count_before(tokens, text)]
            self.stopped[row] = ended = True
        self.tokens[row], self.texts[row], self._ended[row] = tokens, text, ended
        final = text if ended else self._settled(text)
        new, self._reported[row] = final[self._reported[row] :], len(final)
        return new

    def _count_before(self, tokens: list[int], text: str) -> int:
        """How many leading tokens decode to a prefix of `text` (the text before a stop string)."""
        for count in range(len(tokens) - 1, 0, -1):
            if text.startswith(self.tokenizer.decode(tokens[:count])):
                return count
        return 0

    def _settled(self, text: str) -> str:
        """The part of a running row's text that later tokens cannot change or cut."""
        text = text.rstrip(INCOMPLETE)
        held = max((n for s in self.stop_strings for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        return text[: len(text) - held]

    def _find(self, text: str) -> int | None:
        """Where the first stop string in `text` begins, if any."""
        return min((text.find(s) for s in self.stop_strings if s in text), default=None)
