"""The few helpers every layer shares, written once: did-you-mean hints, Keras' snake_case, flatten."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' when a close candidate exists, else ''.

    One rule everywhere: a case-only difference first, then a close spelling (cutoff 0.6), compared
    case-insensitively so `dense` finds `Dense` and `val_acuracy` finds `val_accuracy`."""
    pool = [str(c) for c in candidates]
    lowered = {c.lower(): c for c in pool}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f" (did you mean {lowered[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.75)
    if not close:
        close = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def snake_case(name: str) -> str:
    """A class name as Keras names its instances (`keras.src.utils.naming.to_snake_case`): GRU -> gru,
    Conv2D -> conv2d, BatchNormalization -> batch_normalization; an import path's module is dropped."""
    name = re.sub(r"\W+", "", name.split(":")[-1].split(".")[-1])
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def flatten(data: Any, path: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], Any]:
    """Nested mappings and lists -> {key path: leaf}; a list of plain values (`[28, 28, 1]`) is one leaf."""
    out: dict[tuple[str | int, ...], Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, (*path, str(key))))
    elif isinstance(data, list) and any(isinstance(v, dict | list) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, (*path, i)))
    else:
        out[path] = data
    return out
