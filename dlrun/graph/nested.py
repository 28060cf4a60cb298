"""Keras objects written as arguments: one recursive resolver for every nested `{type: ..., ...}` spec.

A layer argument may itself be a Keras object: a layer (`TimeDistributed.layer`, `Bidirectional.layer`,
`RNN.cell`, a list of cells), a regularizer (`kernel_regularizer: {type: L2, l2: 0.01}`), an initializer,
a constraint or a learning-rate schedule. Such a value is a mapping with `type` (or a list of them).

The static side (`section_for`, `lookup`, `check_value`; no TensorFlow) says which catalog section the
spec belongs to, that its type exists there and that its arguments are right, with located errors.
`check_arguments` (any catalog entry's keyword arguments) lives here too: it and the nested specs it meets
check each other recursively, so a regularizer inside a layer inside a `Bidirectional` is checked too. The build side (`build_value`) turns the same specs into Keras objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlrun.errors import RecipeError, format_path
from dlrun.graph import catalog, values
from dlrun.recipe.load import Document, KeyPath

if TYPE_CHECKING:
    from dlrun.importer import Importer

# Sections a nested spec can come from, in the order they are searched when the argument name says nothing.
SECTIONS = ("layers", "regularizers", "initializers", "constraints", "schedules")
_MODULES = {
    "layers": "keras.layers",
    "regularizers": "keras.regularizers",
    "initializers": "keras.initializers",
    "constraints": "keras.constraints",
    "schedules": "keras.optimizers.schedules",
}
_SUFFIXES = {
    "_regularizer": "regularizers",
    "_initializer": "initializers",
    "_constraint": "constraints",
}
_LAYER_ARGUMENTS = ("layer", "backward_layer", "cell", "cells", "layers")
_WORDS = {
    "layers": "layer",
    "regularizers": "regularizer",
    "initializers": "initializer",
    "constraints": "constraint",
    "schedules": "learning-rate schedule",
}


def is_spec(value: Any) -> bool:
    """Whether `value` is a nested object spec: a mapping whose `type` is a string."""
    return isinstance(value, dict) and isinstance(value.get("type"), str)


def section_for(argument: str) -> str | None:
    """The catalog section an argument's nested spec belongs to, from the argument's Keras name.

    `kernel_regularizer` -> regularizers, `*_initializer` -> initializers, `*_constraint` -> constraints,
    `layer`/`backward_layer`/`cell`/`cells` -> layers, `learning_rate` -> schedules; None when the name
    does not tell (the type is then looked up in every section).
    """
    for suffix, section in _SUFFIXES.items():
        if argument.endswith(suffix) or argument == suffix[1:]:
            return section
    if argument in _LAYER_ARGUMENTS:
        return "layers"
    if argument == "learning_rate":
        return "schedules"
    return None


def lookup(argument: str, type_: str) -> tuple[str, dict[str, Any]] | None:
    """(section, catalog entry) of a nested spec's type for an argument; None when Keras has no such object."""
    wanted = section_for(argument)
    for section in (wanted,) if wanted else SECTIONS:
        entry = catalog.entry(section, type_)
        if entry is not None:
            return section, entry
    return None


def _error(doc: Document | None, message: str, path: KeyPath, *, key: bool = False) -> RecipeError:
    if doc is None:
        return RecipeError(message, path=path)
    return doc.error(message, path, key=key)


_ACCEPTS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "ints": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v))
    ),
}
_ANY = lambda v: True  # noqa: E731
_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "ints": "an integer or a list of integers",
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_arguments(
    doc: Document | None,
    what: str,
    spec: dict[str, Any],
    kwargs: dict[str, Any],
    path: KeyPath,
    *,
    layer: bool,
    skip: tuple[str, ...] = (),
) -> None:
    """Check keyword arguments against a catalog entry: names, required ones, value kinds."""
    params = spec["params"]
    allowed = set(params) | (set(catalog.BASE_LAYER_KWARGS) if layer and spec["var_kwargs"] else set())
    allowed -= {"name"} if layer else set()
    for key, value in kwargs.items():
        if key not in allowed:
            hint = catalog.did_you_mean(key, sorted(allowed))
            msg = f"{what} has no argument {key!r}{hint}"
            raise _error(doc, msg, (*path, key), key=True)
        if check_value(doc, key, value, (*path, key)):
            continue
        meta = params.get(key)
        problem = values.argument_problem(spec, key, value, layer=layer)
        if problem is not None and (meta is None or _ACCEPTS.get(meta["kind"], _ANY)(value)):
            where = values.origin(doc.data, path, key, value) if doc is not None else None
            if where is not None:  # a block parameter: blame the use that passed it
                problem = f"passed to {format_path((*path, key))}: {problem}"
            raise _error(doc, problem, where or (*path, key))
        if meta is None or meta["kind"] == "any":
            continue
        if value is None and (meta["nullable"] or (meta["required"] is False and meta["default"] is None)):
            continue
        if not _ACCEPTS[meta["kind"]](value):
            raise _error(doc, f"expected {_KIND_WORDS[meta['kind']]}, got {_show(value)}", (*path, key))
    for pname, meta in params.items():
        if meta["required"] and pname not in kwargs and pname not in skip:
            raise _error(doc, f"{what} needs argument {pname!r}", path)


def check_spec(doc: Document | None, argument: str, spec: dict[str, Any], path: KeyPath) -> None:
    """Check one nested spec at `path`: its type is a Keras object of the right kind, its arguments fit."""
    type_ = spec["type"]
    if ":" in type_:
        return  # custom import path: checked when imported
    found = lookup(argument, type_)
    if found is None:
        wanted = section_for(argument)
        pool = catalog.names(wanted) if wanted else [n for s in SECTIONS for n in catalog.names(s)]
        what = _WORDS[wanted] if wanted else "Keras layer, regularizer, initializer or constraint"
        hint = catalog.did_you_mean(type_, pool)
        raise _error(doc, f"unknown {what} {type_!r}{hint}", (*path, "type"))
    section, entry = found
    if entry.get("kind") == "function":
        raise _error(doc, f"{type_!r} is a function, not a {_WORDS[section]} class", (*path, "type"))
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if section == "layers" and "name" in kwargs:
        if not isinstance(kwargs["name"], str):
            raise _error(doc, "a layer name is a string", (*path, "name"))
        kwargs.pop("name")
    check_arguments(doc, type_, entry, kwargs, path, layer=section == "layers")


def check_value(doc: Document | None, argument: str, value: Any, path: KeyPath) -> bool:
    """Check `value` of `argument` when it holds nested specs (one, or a list); True when it did."""
    if is_spec(value):
        check_spec(doc, argument, value, path)
        return True
    if isinstance(value, list) and value and any(is_spec(v) for v in value):
        for i, item in enumerate(value):
            if is_spec(item):
                check_spec(doc, argument, item, (*path, i))
        return True
    return False


def nested_layers(kwargs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(argument, spec) of the layers a node's arguments hold (one level: `layer`, `cell`, ...)."""
    out = []
    for key, value in kwargs.items():
        if section_for(key) != "layers":
            continue
        for item in value if isinstance(value, list) else [value]:
            if is_spec(item):
                out.append((key, item))
    return out


# ----------------------------------------------------------------------------------------------------
# build (imports Keras)


def build_spec(argument: str, spec: dict[str, Any], importer: Importer | None, path: KeyPath = ()) -> Any:
    """The Keras object for one nested spec (its own nested specs built first)."""
    import importlib

    type_ = spec["type"]
    kwargs = {k: build_value(k, v, importer, (*path, k)) for k, v in spec.items() if k != "type"}
    if ":" in type_:
        if importer is None:
            raise RecipeError(f"custom component {type_!r} needs an importer", path=path)
        cls = importer.load(type_, (*path, "type"))
    else:
        found = lookup(argument, type_)
        if found is None:
            raise RecipeError(f"{argument!r}: unknown Keras object {type_!r}", path=(*path, "type"))
        cls = getattr(importlib.import_module(_MODULES[found[0]]), type_)
    try:
        return cls(**kwargs)
    except Exception as exc:  # Keras validates its own arguments; report them as recipe errors
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise RecipeError(f"{type_}: {text[:300]}", path=path) from None


def build_value(argument: str, value: Any, importer: Importer | None, path: KeyPath = ()) -> Any:
    """`value` with every nested spec (itself, or items of a list) built into its Keras object."""
    if is_spec(value):
        return build_spec(argument, value, importer, path)
    if isinstance(value, list) and any(is_spec(v) for v in value):
        return [build_value(argument, v, importer, (*path, i)) for i, v in enumerate(value)]
    return value


def build_kwargs(kwargs: dict[str, Any], importer: Importer | None, path: KeyPath = ()) -> dict[str, Any]:
    """A node's keyword arguments with their nested specs built."""
    return {k: build_value(k, v, importer, (*path, k)) for k, v in kwargs.items()}
