"""pydantic validation errors -> one-line `RecipeError` at file:line:column with the key path."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dlrun.errors import RecipeError
from dlrun.recipe.load import Document, KeyPath

_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
}


def _clean_path(loc: tuple[Any, ...], data: Any) -> KeyPath:
    """Drop pydantic's union/validator tags from `loc`, keeping only keys that exist in the data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and part == "from_" and "from" in node:
            path.append("from")
            node = node["from"]
        elif isinstance(part, str) and ("[" in part or part[:1].isupper() or part.startswith("function-")):
            continue  # a union member or validator tag, not a key
        else:
            path.append(part)  # a missing key: keep it, the location falls back to its parent
            node = None
    return tuple(path)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    value = err.get("input")
    for prefix, words in _KIND_WORDS.items():
        if kind in (
            f"{prefix}_type",
            f"{prefix}_parsing",
            f"{prefix}_from_float",
            f"{prefix}_attributes_type",
        ):
            return f"expected {words}, got {_show(value)}"
    if kind == "missing":
        return f"missing required key {err['loc'][-1]!r}"
    if kind == "literal_error":
        return f"expected {err['ctx']['expected']}, got {_show(value)}"
    if kind == "string_pattern_mismatch":
        return f"{_show(value)} is not a valid name (letters, digits, _ . -; not starting with a digit)"
    if kind in ("unknown_key",):
        return err["msg"]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    msg = msg[:1].lower() + msg[1:]
    if kind in (
        "too_short",
        "too_long",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
    ):
        msg = f"{msg}, got {_show(value)}"
    return msg


def _score(err: dict[str, Any], data: Any) -> tuple[int, int]:
    """Prefer errors whose path exists in the document, then deeper ones."""
    path = _clean_path(err["loc"], data)
    exists = 1
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            exists = 0
            break
    return exists, len(path)


def to_recipe_error(exc: ValidationError, doc: Document, prefix: KeyPath = ()) -> RecipeError:
    """The most specific error of `exc`, located in `doc`."""
    errors = exc.errors(include_url=False)
    data = doc.data
    for part in prefix:
        data = data[part]
    err = max(errors, key=lambda e: _score(e, data))
    path = (*prefix, *_clean_path(err["loc"], data))
    if err["type"] == "unknown_key":
        path = (*path, err["ctx"]["key"])
        return doc.error(_message(err), path, key=True)
    if err["type"] == "missing":
        return RecipeError(_message(err), location=doc.locate(path[:-1]), path=path[:-1])
    return doc.error(_message(err), path)
