"""Document composition: `extends:` (deep merge), `--set` overrides, `${path}` interpolation.

Then validation: the composed document -> `Recipe` (schema) -> `Graph` (static checks). `load_recipe`
is the one entry point every verb uses, so `validate`, `summary`, `train` and the Python API all give
the same errors. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlrun.errors import Location, RecipeError, format_path
from dlrun.recipe.expr import PATTERN, ExprError, evaluate
from dlrun.recipe.load import Document, KeyPath, Yaml, load_file, load_text
from dlrun.recipe.locate import to_recipe_error
from dlrun.recipe.schema import Recipe

MAX_EXTENDS = 8


@dataclass
class LoadedRecipe:
    """A validated recipe with its source document, resolved graph and home folder."""

    recipe: Recipe
    doc: Document
    graph: Any  # dlrun.graph.check.Graph: the graph layer sits above this one (import-linter's layers)
    base_dir: Path
    source: str

    def resolved(self) -> dict[str, Any]:
        """The fully composed document (after extends, overrides and interpolation)."""
        return copy.deepcopy(self.doc.data)

    @contextlib.contextmanager
    def locating_errors(self) -> Iterator[None]:
        """Give errors raised about a recipe key after loading (data checks, compile and train options) the
        file:line:column of that key, as loading does."""
        try:
            yield
        except RecipeError as exc:
            if exc.location is None and exc.path:
                exc.location = self.doc.locate(exc.path)
            raise


def _merge(base: Document, top: Document, path: KeyPath = ()) -> None:
    """Deep-merge `top` into `base` in place (mappings merge, everything else replaces)."""
    b = _get(base.data, path)
    t = _get(top.data, path)
    for key, value in t.items():
        child = (*path, key)
        if isinstance(value, dict) and isinstance(b.get(key), dict):
            _merge(base, top, child)
            continue
        b[key] = copy.deepcopy(value)
        for marks_b, marks_t in ((base.value_marks, top.value_marks), (base.key_marks, top.key_marks)):
            for p in [p for p in marks_b if p[: len(child)] == child]:
                del marks_b[p]
            marks_b.update({p: loc for p, loc in marks_t.items() if p[: len(child)] == child})
    for marks_b, marks_t in ((base.key_marks, top.key_marks),):
        marks_b.update({p: loc for p, loc in marks_t.items() if len(p) == len(path) + 1 and p[: len(path)] == path})


def _get(data: Yaml, path: KeyPath) -> Yaml:
    for part in path:
        data = data[part]
    return data


def _with_extends(doc: Document, depth: int = 0) -> Document:
    if not isinstance(doc.data, dict) or "extends" not in doc.data:
        return doc
    if depth >= MAX_EXTENDS:
        raise doc.error(f"`extends` chains deeper than {MAX_EXTENDS} files (a loop?)", ("extends",))
    parents = doc.data.pop("extends")
    parents = [parents] if isinstance(parents, str) else parents
    if not isinstance(parents, list) or not parents or not all(isinstance(p, str) and p for p in parents):
        raise doc.error("`extends` takes a file name or a list of them", ("extends",))
    here = Path(doc.file).parent
    merged: Document | None = None
    for i, parent in enumerate(parents):
        file = here / parent
        if not file.is_file():
            raise doc.error(f"extended recipe not found: {file}", ("extends", i) if len(parents) > 1 else ("extends",))
        loaded = _with_extends(load_file(file), depth + 1)
        if not isinstance(loaded.data, dict):
            raise RecipeError("an extended recipe must be a mapping", location=Location(str(file), 1, 1))
        if merged is None:
            merged = loaded
        else:
            _merge(merged, loaded)
    assert merged is not None
    _merge(merged, doc)
    merged.file = doc.file
    return merged


def _override_location(text: str) -> Location:
    """Where an override's errors point: `--set KEY=VALUE`, kept on one line whatever the value holds."""
    return Location(f"--set {text if text.isprintable() else repr(text)}")


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """`a.b[0].c=value` -> (('a', 'b', 0, 'c'), value parsed as a YAML scalar/flow value)."""
    where = _override_location(text)
    if "=" not in text:
        raise RecipeError("expected KEY.PATH=VALUE", location=where)
    key, _, raw = text.partition("=")
    path: list[str | int] = []
    for part in key.strip().split("."):
        while "[" in part and part.endswith("]"):
            head, _, rest = part.partition("[")
            if head:
                path.append(head)
            index, _, part = rest.partition("]")
            if not index.isdigit():
                raise RecipeError(f"list index must be a number, got {index!r}", location=where)
            path.append(int(index))
            part = part.lstrip("]")
        if part:
            path.append(int(part) if part.isdigit() else part)
    if not path or any(p == "" for p in path):
        raise RecipeError("empty key; expected KEY.PATH=VALUE", location=where)
    try:
        value = load_text(raw, f"--set {text}").data if raw.strip() else ""
    except RecipeError as exc:
        raise RecipeError(f"value: {exc.message}", location=where) from None
    return tuple(path), value


def apply_override(doc: Document, text: str) -> None:
    """Apply one `--set` to the document; errors (now and in later validation) point at the override."""
    path, value = parse_override(text)
    where = _override_location(text)
    node = doc.data
    for i, part in enumerate(path):
        here = path[: i + 1]
        last = i == len(path) - 1
        if isinstance(node, dict) and isinstance(part, str):
            if last:
                node[part] = value
            elif part not in node or node[part] is None:
                node[part] = [] if isinstance(path[i + 1], int) else {}
                doc.value_marks[here] = doc.key_marks[here] = where
            elif not isinstance(node[part], dict | list):
                raise RecipeError(f"{format_path(here)} is {_show(node[part])}, not a mapping or list", location=where)
        elif isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                shown = format_path(here)
                raise RecipeError(f"{shown}: no such item (the list has {len(node)})", location=where)
            if last:
                node[part] = value
        elif isinstance(node, list):
            shown = format_path(path[:i])
            raise RecipeError(f"{shown} is a list; index it with [N], not .{part}", location=where)
        else:
            shown = format_path(path[:i]) or "the recipe"
            raise RecipeError(f"{shown} is a mapping; use a key, not [{part}]", location=where)
        if not last:
            node = node[part]
    for marks in (doc.value_marks, doc.key_marks):
        for p in [p for p in marks if p[: len(path)] == path]:
            del marks[p]
        marks[path] = where


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def interpolate(doc: Document) -> None:
    """Replace `${dotted.path}` references to other recipe values (outside `blocks`, whose `${}` are params)."""

    def lookup(expr: str, at: KeyPath) -> Yaml:
        node: Yaml = doc.data
        for part in expr.strip().split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise doc.error(f"`${{{expr}}}` refers to {expr.strip()!r}, which is not in the recipe", at)
        if isinstance(node, str) and "${" in node:
            raise doc.error(f"`${{{expr}}}` refers to another interpolation; refer to the value directly", at)
        return node

    def calculate(expr: str, at: KeyPath) -> Any:
        try:
            return evaluate(expr, {})
        except ExprError as exc:
            if str(exc).startswith("unknown name"):
                raise doc.error(
                    f"`${{{expr.strip()}}}` is not a dotted path to a recipe value (like `${{train.epochs}}`); "
                    "bare names work only inside blocks",
                    at,
                ) from None
            raise doc.error(str(exc), at) from None

    def walk(value: Yaml, at: KeyPath) -> Yaml:
        if isinstance(value, dict):
            for k in list(value):
                if at == () and k == "blocks":
                    continue
                value[k] = walk(value[k], (*at, k))
            return value
        if isinstance(value, list):
            return [walk(v, (*at, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            if at[:1] == ("model",) and _in_block_use(doc.data, at):
                return value  # a block parameter, substituted at expansion time
            whole = PATTERN.fullmatch(value.strip())
            if whole and _is_path(whole.group(1)):
                return lookup(whole.group(1), at)
            if whole:
                return calculate(whole.group(1), at)  # one whole expression keeps its type: "${1/255}"
            return PATTERN.sub(
                lambda m: str(lookup(m.group(1), at) if _is_path(m.group(1)) else calculate(m.group(1), at)), value
            )
        return value

    walk(doc.data, ())


def _is_path(expr: str) -> bool:
    parts = expr.strip().split(".")
    return len(parts) > 1 and all(p.isidentifier() or p.isdigit() for p in parts)


def _in_block_use(data: dict[str, Any], at: KeyPath) -> bool:
    """Whether `at` lies in a node that uses a block (its `${}` are evaluated per copy)."""
    blocks = data.get("blocks")
    if not isinstance(blocks, dict) or len(at) < 3 or at[1] != "layers" or not isinstance(at[2], int):
        return False
    try:
        node = data["model"]["layers"][at[2]]
    except (KeyError, IndexError, TypeError):
        return False
    return isinstance(node, dict) and isinstance(node.get("type"), str) and node["type"] in blocks


def compose(doc: Document, overrides: list[str] | tuple[str, ...] = ()) -> Document:
    """Apply extends, overrides and interpolation to a loaded document."""
    if not isinstance(doc.data, dict):
        raise RecipeError("a recipe must be a mapping of sections (name, model, compile, ...)", location=doc.locate(()))
    doc = _with_extends(doc)
    for text in overrides:
        apply_override(doc, text)
    interpolate(doc)
    return doc


def validate_document(doc: Document) -> Recipe:
    """Schema validation with located errors."""
    try:
        return Recipe.model_validate(doc.data)
    except ValidationError as exc:
        raise to_recipe_error(exc, doc) from None


def dump_yaml(data: Yaml) -> str:
    """YAML text for a resolved document (stable key order as written)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)
