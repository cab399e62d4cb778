"""Taps: named intermediate values of a forward pass, kept when asked for and free otherwise.

    with taps.recording() as record:
        model.apply(params, tokens)
    [(t.layer, t.name, t.value.shape) for t in record]

Layers call `tap(name, value)` where a value is worth seeing (queries after RoPE, attention
weights, the router's choices, each layer's output); outside `recording` it returns the value
and does nothing else. While recording, stacked layers run one at a time instead of scanned
(zoo.models.stack), attention takes the plain kernel, which materialises its weights, and each
Block numbers its taps with its layer index in the order the layers run, so every value is a
concrete array of the real forward. Record eagerly (not under jax.jit): a tap inside a jax
transformation would hold a tracer, and `tap` says so, unless the recording is `abstract`:
then each tap keeps only its value's shape and dtype (a jax.ShapeDtypeStruct), which is what
a walk over a model too large to hold needs, traced with jax.eval_shape.

An encoder-decoder runs each tower inside `tower("encoder")` / `tower("decoder")`: its taps
carry the tower's name, and layers number from 0 in each. Cross-attention taps inside
`renamed("cross_")`, so its queries, scores and weights read "cross_attention.q", ... beside the
same layer's self-attention.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Iterator

import jax


@dataclasses.dataclass(frozen=True)
class Tap:
    """One recorded value: the layer it came from (None outside the layers), its name, the array,
    and the tower it came from (an encoder-decoder's "encoder" or "decoder"; None in other models)."""

    layer: int | None
    name: str
    value: jax.Array  # a jax.ShapeDtypeStruct in an abstract recording
    tower: str | None = None


@dataclasses.dataclass
class _Recording:
    taps: list[Tap]
    abstract: bool = False
    layers: dict = dataclasses.field(default_factory=dict)  # tower -> layers begun so far in it
    layer: int | None = None  # the one running
    tower: str | None = None  # the one running
    prefix: str = ""  # put before the names tapped (renamed)


_active: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar("zoo_taps", default=None)


@contextlib.contextmanager
def recording(abstract: bool = False) -> Iterator[list[Tap]]:
    """Records every tap made inside the block into the list it yields; `abstract`: only shapes and dtypes."""
    record = _Recording([], abstract)
    token = _active.set(record)
    try:
        yield record.taps
    finally:
        _active.reset(token)


def active() -> bool:
    """Whether a forward pass is being recorded (layers then run unscanned)."""
    return _active.get() is not None


def tap(name: str, value: jax.Array) -> jax.Array:
    """Records `value` under `name` (and the running layer) while recording; returns it unchanged."""
    record = _active.get()
    if record is None:
        return value
    if not record.abstract and isinstance(value, jax.core.Tracer):
        raise RuntimeError(f"tap {name!r} met a traced value: record a forward pass eagerly, not under jax.jit or a transformation")
    kept = jax.ShapeDtypeStruct(value.shape, value.dtype) if record.abstract else value
    record.taps.append(Tap(record.layer, record.prefix + name, kept, record.tower))
    return value


@contextlib.contextmanager
def tower(name: str) -> Iterator[None]:
    """Marks the taps inside as tower `name`'s (an encoder-decoder's "encoder" or "decoder")."""
    record = _active.get()
    if record is None:
        yield
        return
    outer, record.tower = record.tower, name
    try:
        yield
    finally:
        record.tower = outer


@contextlib.contextmanager
def renamed(prefix: str) -> Iterator[None]:
    """Puts `prefix` before the names of the taps inside (cross-attention's "cross_")."""
    record = _active.get()
    if record is None:
        yield
        return
    outer, record.prefix = record.prefix, prefix + record.prefix
    try:
        yield
    finally:
        record.prefix = outer


@contextlib.contextmanager
def layer() -> Iterator[None]:
    """Marks the taps inside as the next layer's (layers number 0, 1, ... in the order they run)."""
    record = _active.get()
    if record is None:
        yield
        return
    outer, record.layer = record.layer, record.layers.get(record.tower, 0)
    record.layers[record.tower] = record.layer + 1
    try:
        yield
    finally:
        record.layer = outer


def kernel(name: str) -> str:
    """The attention kernel to run: `name`, or the plain one ("xla", whose weights are tapped) while recording."""
    return "xla" if active() else name
