"""Tensor references in a recipe: `name`, `name[2]` (one output of several) or `name[state_h]` (a sub-model's
output by its name).

A reference names a model input or a node; the part in brackets picks one output of a node whose layer
or sub-model returns several tensors. References appear in `inputs:`, in a layer's `call:` (where every
string is one), in the arguments of `ops.*` nodes (where a string naming a node or input is one) and in
`model.outputs`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dlrun.recipe.load import KeyPath

_REF = re.compile(r"^(?P<base>[A-Za-z_][A-Za-z0-9_.\-]*)(\[(?P<pick>\d+|[A-Za-z_][A-Za-z0-9_.\-]*)\])?$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference: the node or input `base`, and which of its outputs (`pick`: index, name or None)."""

    base: str
    pick: int | str | None = None

    def __str__(self) -> str:
        return self.base if self.pick is None else f"{self.base}[{self.pick}]"

    def with_base(self, base: str) -> Ref:
        """The same output of another node (block renaming, alias resolution)."""
        return Ref(base, self.pick)


def parse(text: str) -> Ref | None:
    """`Ref` for a reference string, or None when `text` cannot be one."""
    m = _REF.match(text)
    if m is None:
        return None
    pick = m.group("pick")
    return Ref(m.group("base"), int(pick) if pick is not None and pick.isdigit() else pick)


def base(text: str) -> str:
    """The node or input a reference string names (the text itself when it is not a reference)."""
    ref = parse(text)
    return ref.base if ref is not None else text


def rename(text: str, mapping: Callable[[str], str]) -> str:
    """The reference with its base mapped (the pick kept); non-references are returned unchanged."""
    ref = parse(text)
    if ref is None:
        return text
    return str(ref.with_base(mapping(ref.base)))


def strings(value: Any, path: KeyPath) -> Iterator[tuple[str, KeyPath]]:
    """Every string inside a call value (itself, or inside lists and mappings), with its key path."""
    if isinstance(value, str):
        yield value, path
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from strings(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, (*path, key))


def replace(value: Any, tensor: Callable[[str], Any | None]) -> Any:
    """`value` with each string that `tensor` maps to something replaced by it (lists and mappings walked)."""
    if isinstance(value, str):
        found = tensor(value)
        return value if found is None else found
    if isinstance(value, list):
        return [replace(v, tensor) for v in value]
    if isinstance(value, tuple):
        return tuple(replace(v, tensor) for v in value)
    if isinstance(value, dict):
        return {k: replace(v, tensor) for k, v in value.items()}
    return value
