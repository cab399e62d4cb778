"""A row's text as tokens arrive: stop strings end it, and only text that cannot change is reported."""

import pytest

from zoo.stopping import RowTexts

# token i is VOCAB[i]: tokens split characters ("é" is c3 a9, "ö" is c3 b6) and the text "\n\n"
VOCAB = [b"h\xc3", b"\xa9ll", b"o\n", b"w\xc3", b"\xb6r", b"ld\n", b"\nre", b"st"]
TEXT = "héllo\nwörld\n\nrest"


class Bytes:
    def decode(self, ids):
        return b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace")


def feed(stop_strings, tokens, every=1):
    """(pieces reported, kept tokens, text, stopped) after feeding `tokens` `every` at a time."""
    texts, pieces = RowTexts(Bytes(), stop_strings, 1), []
    for end in range(every, len(tokens) + every, every):
        pieces.append(texts.update(0, tokens[:end], ended=end >= len(tokens)))
    return pieces, texts.tokens[0], texts.texts[0], bool(texts.stopped[0])


@pytest.mark.parametrize("every", [1, 2, 3])
@pytest.mark.parametrize(
    "stops, text, kept",
    [
        (["\n\n"], "héllo\nwörld", 5),  # begins inside "ld\n", ends inside "\nre"
        (["örl"], "héllo\nw", 3),  # begins inside a character split over two tokens
        (["xyz", "o\nw", "\n\n"], "héll", 2),  # the first stop in the text wins, whatever its place in the list
        (["\n\n\n"], TEXT, 8),  # held back while it might begin, then given out at the end
        ([], TEXT, 8),
    ],
)
def test_text_ends_before_the_stop_and_pieces_add_up_to_it(stops, text, kept, every):
    pieces, tokens, got, stopped = feed(stops, list(range(len(VOCAB))), every)
    assert got == text and stopped == (text != TEXT)
    assert tokens == list(range(kept)) and text.startswith(Bytes().decode(tokens))
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)  # incomplete characters wait for their bytes


def test_a_tail_that_may_begin_a_stop_waits():
    texts = RowTexts(Bytes(), ["\n\n"], 1)
    assert texts.update(0, [0, 1, 2], ended=False) == "héllo"  # the "\n" waits
    assert texts.update(0, [0, 1, 2, 3], ended=False) == "\nw"  # not a stop after all; "\xc3" waits
    assert texts.update(0, [0, 1, 2, 3], ended=True) == "\ufffd"  # the end: the text is what decoding gives
