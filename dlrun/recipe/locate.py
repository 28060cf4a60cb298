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
# pydantic's tags for union members of plain types (`int | list[...]` -> loc (..., 'int'))
_TYPE_TAGS = frozenset({"int", "str", "float", "bool", "none", "bytes", "any"})
_BOUNDS = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
}
_LENGTHS = {
    "too_short": ("min_length", "at least", "item"),
    "too_long": ("max_length", "at most", "item"),
    "string_too_short": ("min_length", "at least", "character"),
    "string_too_long": ("max_length", "at most", "character"),
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
        elif isinstance(part, str) and (
            "[" in part or part[:1].isupper() or part.startswith("function-") or part in _TYPE_TAGS
        ):
            continue  # a union member or validator tag, not a key
        else:
            path.append(part)  # a missing key: keep it, the location falls back to its parent
            node = None
    return tuple(path)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(err: dict[str, Any]) -> str | None:
    """What a type or literal error expected, in words ("an integer"), else None."""
    kind = err["type"]
    for prefix, words in _KIND_WORDS.items():
        if kind in (
            f"{prefix}_type",
            f"{prefix}_parsing",
            f"{prefix}_from_float",
            f"{prefix}_attributes_type",
        ):
            return words
    if kind == "literal_error":
        return str(err["ctx"]["expected"])
    return None


def _message(err: dict[str, Any], alternatives: list[str] | tuple[str, ...] = ()) -> str:
    kind = err["type"]
    value = err.get("input")
    expected = _expected(err)
    if expected is not None:
        words = list(dict.fromkeys([expected, *alternatives]))
        shown = ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
        return f"expected {shown}, got {_show(value)}"
    if kind == "missing":
        return f"missing required key {err['loc'][-1]!r}"
    ctx = err.get("ctx") or {}
    if kind in _BOUNDS and _BOUNDS[kind][0] in ctx:
        bound, text = _BOUNDS[kind]
        return f"{text.format(ctx[bound])}, got {_show(value)}"
    if kind in _LENGTHS and _LENGTHS[kind][0] in ctx:
        bound, side, noun = _LENGTHS[kind]
        count = ctx[bound]
        return f"expected {side} {count} {noun}{'' if count == 1 else 's'}, got {_show(value)}"
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
    here = _clean_path(err["loc"], data)
    path = (*prefix, *here)
    if err["type"] == "unknown_key":
        if not path and isinstance(data, dict) and not set(map(str, data)) & set(err["ctx"]["allowed"].split(", ")):
            # Not a recipe at all (`dlrun validate /etc/shadow`): say so without quoting any of its content.
            return RecipeError(
                "this file does not look like a recipe: none of its top-level keys is a recipe section (name, "
                "model, compile, ...); its content is not shown",
                location=doc.locate(()),
            )
        path = (*path, err["ctx"]["key"])
        return doc.error(_message(err), path, key=True)
    if err["type"] == "missing":
        return RecipeError(_message(err), location=doc.locate(path[:-1]), path=path[:-1])
    # The other members of a union (`int | list[...]`) failing at the same place: name them all.
    alternatives = [
        words
        for other in errors
        if other is not err and _clean_path(other["loc"], data) == here and (words := _expected(other)) is not None
    ]
    return doc.error(_message(err, alternatives if _expected(err) else []), path)
