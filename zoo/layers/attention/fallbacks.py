"""What a fused attention kernel does with a call it cannot take: hand it to the chunked kernel,
saying why once in the log."""

from __future__ import annotations

from zoo.layers.attention.chunked import chunked_attention
from zoo.layers.attention.mask import AttentionMask
from zoo.layers.attention.notices import say_once


def fallback(kernel: str, reason: str, q, k, v, mask, **options):
    """The chunked kernel, for calls a fused kernel cannot take; logged once per kernel and reason."""
    say_once(f"attention: {kernel} cannot take this call ({reason}); using chunked")
    return chunked_attention(q, k, v, mask, **options)


def unsupported(mask: AttentionMask, sinks, bias) -> str | None:
    """Why no fused kernel takes a call with `mask`, `sinks` and `bias` (None: nothing stops them)."""
    if not mask.aligned:
        return "keys are not the queries' own sequence (a cache or explicit positions)"
    if sinks is not None:
        return "attention sinks"
    if bias is not None:
        return "a position bias"
    if mask.q_global is not None:
        return "global tokens"
    if mask.chunk is not None:  # their index-based masks cannot restart chunks at each segment's start
        return "chunked local attention"
    return None
