"""What Keras offers by name, and each constructor's arguments, usable without importing TensorFlow.

The facts live in `keras_catalog.json`, generated from the installed Keras by `make catalog`
(`python -m dlrun.graph.catalog --write`); a test regenerates it and compares, so it cannot drift silently.
Argument kinds come from the constructor signature (required or not, default) and the first words of
each argument's docstring ("Positive integer, ..." -> int), which is how Keras documents them.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.util import did_you_mean  # noqa: F401  (the one implementation; re-exported for graph/)

if TYPE_CHECKING:
    import keras

CATALOG_PATH = Path(__file__).with_name("keras_catalog.json")

# Sections of the catalog: section name -> Keras module path that holds the classes/functions.
SECTIONS = {
    "layers": "keras.layers",
    "optimizers": "keras.optimizers",
    "schedules": "keras.optimizers.schedules",
    "losses": "keras.losses",
    "metrics": "keras.metrics",
    "callbacks": "keras.callbacks",
    "applications": "keras.applications",
    "regularizers": "keras.regularizers",
    "initializers": "keras.initializers",
    "constraints": "keras.constraints",
    "ops": "keras.ops",
}
# Base classes a section lists no entry for (they cannot be built from arguments).
_BASES = {"regularizers": "Regularizer", "initializers": "Initializer", "constraints": "Constraint"}

# Keyword arguments every Layer accepts through **kwargs (keras.layers.Layer.__init__).
BASE_LAYER_KWARGS = (
    "name",
    "dtype",
    "trainable",
    "autocast",
    "activity_regularizer",
    "input_shape",
    "input_dim",
)


@functools.lru_cache(maxsize=1)
def load_catalog() -> dict[str, Any]:
    """The generated catalog (cached)."""
    return json.loads(CATALOG_PATH.read_text(encoding="utf-8"))


def entry(section: str, name: str) -> dict[str, Any] | None:
    """Catalog entry for `name` in `section`, or None when Keras has no such thing."""
    return load_catalog()[section].get(name)


def names(section: str) -> list[str]:
    """All names in a section."""
    return sorted(load_catalog()[section])


def aliases(section: str) -> dict[str, str]:
    """String identifiers Keras accepts for a section (e.g. 'rmsprop' -> 'RMSprop')."""
    return load_catalog().get("aliases", {}).get(section, {})


# ----------------------------------------------------------------------------------------------------
# Generation (imports Keras; only run by `make catalog` and the drift test)

_KIND_PATTERNS = [
    (
        re.compile(r"^(a |an )?(positive |non-negative |strictly positive )?(int|integer)s? or (a )?(tuple|list)"),
        "ints",
    ),
    (
        re.compile(
            r"^(a |an )?(positive |non-negative |strictly positive )?(int|integer)\b(?!.*\b(or|tuple|list|none)\b)"
        ),
        "int",
    ),
    (re.compile(r"^(a |an )?(positive )?(float|floating)\b(?!.*\b(or|tuple|list|none|tensor)\b)"), "float"),
    (re.compile(r"^(a )?(bool|boolean)\b(?!.*\b(or|tuple|list|none|tensor)\b)"), "bool"),
]


def _arg_docs(doc: str) -> dict[str, str]:
    """Map argument name -> first line of its description in a Google-style `Args:` section."""
    out: dict[str, str] = {}
    in_args = False
    indent = None
    for raw in (doc or "").splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:"):
            in_args, indent = True, None
            continue
        if not in_args:
            continue
        if stripped.endswith(":") and " " not in stripped and indent is not None and len(line) - len(stripped) < indent:
            break  # next section (Returns:, Example:, ...)
        m = re.match(r"^(\s*)`?(\w+)`?\s*(\([^)]*\))?:\s*(.*)$", line)
        if m:
            level = len(m.group(1))
            if indent is None:
                indent = level
            if level == indent:
                out[m.group(2)] = m.group(4)
    return out


def _kind(doc_line: str) -> str:
    text = doc_line.strip().lower().replace("`", "")
    for pattern, kind in _KIND_PATTERNS:
        if pattern.search(text):
            return kind
    return "any"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        items = [_jsonable(v) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value, strict=True)) else None
    return repr(value)


def _describe(obj: Any) -> dict[str, Any]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    docs = _arg_docs(inspect.getdoc(obj) or "")
    params: dict[str, Any] = {}
    var_kwargs = False
    for pname, p in sig.parameters.items():
        if pname == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kwargs = True
            continue
        required = p.default is inspect.Parameter.empty
        default = None if required else _jsonable(p.default)
        kind = _kind(docs.get(pname, ""))
        # A default of another type means the docstring's word was too narrow; trust the signature.
        if (
            not required
            and p.default is not None
            and (
                (kind == "int" and not isinstance(p.default, int))
                or (kind == "float" and not isinstance(p.default, int | float))
                or (kind == "bool" and not isinstance(p.default, bool))
            )
        ):
            kind = "any"
        params[pname] = {
            "required": required,
            "default": default,
            "kind": kind,
            "nullable": p.default is None,
        }
    return {"params": params, "var_kwargs": var_kwargs}


def _call_params(cls: type[keras.layers.Layer]) -> dict[str, Any]:
    """A layer's `call()` arguments in order (the first takes the node's `inputs`), the required ones, and
    whether it takes any keyword (`**kwargs`)."""
    try:
        params = inspect.signature(cls.call).parameters
    except (TypeError, ValueError):
        return {"args": [], "required": [], "var_kwargs": True}
    named = [(p, v) for p, v in params.items() if p != "self" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    return {
        "args": [p for p, _ in named],
        "required": [p for p, v in named if v.default is inspect.Parameter.empty],
        "var_kwargs": any(v.kind is v.VAR_KEYWORD for v in params.values()),
    }


def generate() -> dict[str, Any]:
    """Introspect the installed Keras into the catalog structure."""
    import importlib

    import keras

    out: dict[str, Any] = {"keras_version": keras.__version__, "aliases": {}}
    for section, modname in SECTIONS.items():
        module = importlib.import_module(modname)
        entries: dict[str, Any] = {}
        for name in dir(module):
            if name.startswith("_"):
                continue
            obj = getattr(module, name)
            if section == "layers":
                if not (inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)):
                    continue
            elif section == "optimizers":
                if not (inspect.isclass(obj) and issubclass(obj, keras.optimizers.Optimizer)) or name == "Optimizer":
                    continue
            elif section == "schedules":
                if not (inspect.isclass(obj) and issubclass(obj, keras.optimizers.schedules.LearningRateSchedule)):
                    continue
                if name == "LearningRateSchedule":
                    continue
            elif section == "losses":
                if not (inspect.isclass(obj) or inspect.isfunction(obj)) or name in (
                    "Loss",
                    "get",
                    "serialize",
                    "deserialize",
                ):
                    continue
            elif section == "metrics":
                if not (inspect.isclass(obj) or inspect.isfunction(obj)) or name in (
                    "Metric",
                    "get",
                    "serialize",
                    "deserialize",
                ):
                    continue
            elif section == "callbacks":
                if not (inspect.isclass(obj) and issubclass(obj, keras.callbacks.Callback)):
                    continue
                if name in ("Callback", "CallbackList", "History", "ProgbarLogger"):
                    continue
            elif section == "applications" and not inspect.isfunction(obj):
                continue
            elif section in _BASES:
                base = getattr(module, _BASES[section])
                if not (inspect.isclass(obj) and issubclass(obj, base)) or obj is base:
                    continue
            elif section == "ops" and not inspect.isfunction(obj):
                continue
            try:
                desc = _describe(obj)
            except (TypeError, ValueError):
                continue
            desc["kind"] = "class" if inspect.isclass(obj) else "function"
            if section == "ops":
                # The JSON is written with sorted keys: keep the positional order apart.
                desc["order"] = list(desc["params"])
            if section == "layers":
                desc["call"] = _call_params(obj)
            if section == "applications":
                preprocess = sys.modules.get(obj.__module__)
                public = obj.__module__.replace("keras.src.", "keras.", 1)
                desc["preprocess"] = f"{public}:preprocess_input" if hasattr(preprocess, "preprocess_input") else None
            entries[name] = desc
        out[section] = dict(sorted(entries.items()))
    out["aliases"]["optimizers"] = {
        "sgd": "SGD",
        "rmsprop": "RMSprop",
        "adam": "Adam",
        "adamw": "AdamW",
        "adadelta": "Adadelta",
        "adagrad": "Adagrad",
        "adamax": "Adamax",
        "adafactor": "Adafactor",
        "nadam": "Nadam",
        "ftrl": "Ftrl",
        "lion": "Lion",
        "lamb": "Lamb",
        "loss_scale_optimizer": "LossScaleOptimizer",
        "muon": "Muon",
    }
    out["aliases"]["optimizers"] = {k: v for k, v in out["aliases"]["optimizers"].items() if v in out["optimizers"]}
    out["aliases"]["metrics"] = {
        "accuracy": "accuracy",
        "acc": "accuracy",
        "crossentropy": "crossentropy",
        "ce": "crossentropy",
    }
    out["aliases"]["losses"] = {
        "mse": "mean_squared_error",
        "mae": "mean_absolute_error",
        "mape": "mean_absolute_percentage_error",
        "msle": "mean_squared_logarithmic_error",
    }
    out["activations"] = sorted(
        n for n in dir(keras.activations) if not n.startswith("_") and n not in ("get", "serialize", "deserialize")
    )
    add_value_facts(out)
    return out


# ----------------------------------------------------------------------------------------------------
# Value facts (imports Keras; only at generation): which strings and numbers each argument accepts

# The string identifiers Keras resolves, per kind, read from each `get()`'s own lookup table.
REGISTRY_MODULES = {
    "activations": "keras.src.activations",
    "initializers": "keras.src.initializers",
    "regularizers": "keras.src.regularizers",
    "constraints": "keras.src.constraints",
}
# Which registry an argument draws from, by Keras' naming convention for its arguments.
REGISTRY_SUFFIXES = (
    ("activation", "activations"),
    ("_initializer", "initializers"),
    ("_regularizer", "regularizers"),
    ("_constraint", "constraints"),
)
# dlrun's own upper bound for sizes (Keras accepts any positive integer at construction and fails later).
MAX_DIMENSION = 2**31 - 1
_PROBE = "__dlrun_probe__"
_SAMPLE = {"int": 2, "ints": 2, "float": 0.5, "bool": False}
DERIVED = {
    "registries": "keys of each keras.src.<module>.ALL_OBJECTS_DICT, the table the module's get() looks a "
    "string up in (case-sensitive)",
    "registry": "an argument named like Keras' convention (activation, *_initializer, *_regularizer, "
    "*_constraint) whose default is in that registry (or None), and which Keras refuses a bogus string for "
    "when the layer is constructed",
    "enum": "the quoted strings of the argument's docstring that the layer's constructor accepts, kept only "
    "when the constructor refuses a bogus string (so the list is what Keras checks); case_insensitive when "
    "it accepts the upper-cased default too",
    "minimum": "probing the constructor with 0 and -1 (ints) or -0.5 and 0 (floats): the smallest accepted",
    "maximum": f"probing floats with 1 and 1.5; sizes (minimum 0 or 1) are capped at {MAX_DIMENSION} "
    "(2**31 - 1, the largest dimension of an int32 shape) by dlrun; a fraction (the docstring says so) "
    "that Keras accepts up to 1 is < 1, since 1 drops everything",
}


def _full_arg_docs(doc: str) -> dict[str, str]:
    """Argument name -> its whole description (continuation lines joined) in a Google-style `Args:`."""
    out: dict[str, str] = {}
    current: str | None = None
    indent: int | None = None
    in_args = False
    for raw in (doc or "").splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:"):
            in_args, indent, current = True, None, None
            continue
        if not in_args:
            continue
        level = len(line) - len(stripped)
        if stripped and indent is not None and level < indent:
            break
        m = re.match(r"^(\s*)`?(\w+)`?\s*(\([^)]*\))?:\s*(.*)$", line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            current = m.group(2)
            out[current] = m.group(4)
        elif current is not None and stripped:
            out[current] += " " + stripped
    return out


def _constructs(cls: type, kwargs: dict[str, Any]) -> bool:
    try:
        cls(**kwargs)
    except Exception:  # any refusal by Keras counts as "not accepted"
        return False
    return True


def _numeric_range(cls: type, base: dict[str, Any], pname: str, kind: str, doc: str) -> dict[str, Any]:
    if pname == "seed":
        return {}
    if kind in ("int", "ints"):
        if not _constructs(cls, {**base, pname: 1}) or _constructs(cls, {**base, pname: -1}):
            return {}
        low = 0 if _constructs(cls, {**base, pname: 0}) else 1
        return {"minimum": low, "maximum": MAX_DIMENSION}
    if kind == "float":
        if not _constructs(cls, {**base, pname: 0.5}):
            return {}
        out: dict[str, Any] = {}
        if not _constructs(cls, {**base, pname: -0.5}):
            out["minimum" if _constructs(cls, {**base, pname: 0.0}) else "exclusive_minimum"] = 0
        if not _constructs(cls, {**base, pname: 1.5}):
            inclusive = _constructs(cls, {**base, pname: 1.0}) and "fraction" not in doc.lower()
            out["maximum" if inclusive else "exclusive_maximum"] = 1
        return out
    return {}


def _string_choices(cls: type, base: dict[str, Any], pname: str, default: Any, doc: str) -> dict[str, Any]:
    quoted = re.findall(r"[\"']([A-Za-z_][\w\-]*)[\"']", doc)
    candidates = list(dict.fromkeys([*([default] if isinstance(default, str) else []), *quoted]))
    if not candidates or _constructs(cls, {**base, pname: _PROBE}):
        return {}
    accepted = [c for c in candidates if _constructs(cls, {**base, pname: c})]
    if not accepted:
        return {}
    return {"enum": sorted(accepted), "case_insensitive": _constructs(cls, {**base, pname: accepted[0].upper()})}


def _registry_of(pname: str) -> str | None:
    return next((reg for suffix, reg in REGISTRY_SUFFIXES if pname.endswith(suffix)), None)


def _layer_values(cls: type, entry: dict[str, Any], registries: dict[str, list[str]]) -> dict[str, Any]:
    """Per argument of one layer: its registry, its string choices or its numeric range, probed from Keras."""
    params = entry["params"]
    base = {}
    for pname, meta in params.items():
        if meta["required"]:
            if meta["kind"] not in _SAMPLE:
                return {}
            base[pname] = _SAMPLE[meta["kind"]]
    if not _constructs(cls, base):
        return {}
    docs = _full_arg_docs(inspect.getdoc(cls) or "")
    out: dict[str, Any] = {}
    for pname, meta in params.items():
        doc = docs.get(pname, "")
        registry = _registry_of(pname)
        if registry is not None:
            default = meta["default"]
            if (default is None or default in registries[registry]) and not _constructs(cls, {**base, pname: _PROBE}):
                out[pname] = {"registry": registry}
            continue
        if meta["kind"] in ("int", "ints", "float"):
            facts = _numeric_range(cls, base, pname, meta["kind"], doc)
        elif meta["kind"] == "any" and (isinstance(meta["default"], str) or meta["default"] is None):
            facts = _string_choices(cls, base, pname, meta["default"], doc)
        else:
            facts = {}
        if facts:
            out[pname] = facts
    return out


def _first_sentence(text: str, limit: int = 160) -> str:
    """An argument's description up to its first full stop, at most `limit` characters (for hover)."""
    first = re.split(r"(?<=\.)\s", " ".join(text.split()))[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _one_line(text: str) -> str:
    first = (text or "").strip().split("\n\n")[0]
    return " ".join(first.split())


def _add_registry_aliases(out: dict[str, Any]) -> None:
    """String identifiers of optimizers and losses that Keras' own `get()` tables resolve, added to the
    aliases (which dlrun also resolves for metrics, whose strings compile_utils.get_metric handles)."""
    from keras.src import losses, optimizers

    for section, module in (("optimizers", optimizers), ("losses", losses)):
        table = out["aliases"].setdefault(section, {})
        for key, obj in module.ALL_OBJECTS_DICT.items():
            target = getattr(obj, "__name__", None)
            if key.islower() and key not in out[section] and target in out[section] and key not in table:
                table[key] = target
        out["aliases"][section] = dict(sorted(table.items()))
    out["derived"]["aliases"] = (
        "optimizers and losses: the lower-case keys of keras.src.<module>.ALL_OBJECTS_DICT that name a catalog "
        "class or function by another name, plus dlrun's own short names; metrics: the strings "
        "keras.src.trainers.compile_utils.get_metric resolves (accuracy, acc) and dlrun's"
    )


def add_value_facts(out: dict[str, Any]) -> None:
    """Add identifier registries, each layer's value constraints and one-line docs to the catalog."""
    import importlib
    import logging
    import os
    import warnings

    import keras

    registries = {kind: sorted(importlib.import_module(mod).ALL_OBJECTS_DICT) for kind, mod in REGISTRY_MODULES.items()}
    out["registries"] = registries
    out["derived"] = dict(DERIVED)
    _add_registry_aliases(out)
    out["base_layer_values"] = {"activity_regularizer": {"registry": "regularizers"}}
    logging.getLogger("absl").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for section, modname in SECTIONS.items():
        module = importlib.import_module(modname)
        for name, entry in out[section].items():
            obj = getattr(module, name)
            docs = _full_arg_docs(inspect.getdoc(obj) or "")
            entry["doc"] = _one_line(inspect.getdoc(obj) or "")
            entry["arg_docs"] = {p: _first_sentence(docs[p]) for p in entry["params"] if docs.get(p)}
            if section == "layers" and inspect.isclass(obj) and issubclass(obj, keras.layers.Layer):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    values = _layer_values(obj, entry, registries)
                if values:
                    entry["values"] = values


def render(catalog: dict[str, Any]) -> str:
    """Stable JSON text for the catalog file."""
    return json.dumps(catalog, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m dlrun.graph.catalog [--write|--check]`."""
    argv = sys.argv[1:] if argv is None else argv
    text = render(generate())
    if "--check" in argv:
        current = CATALOG_PATH.read_text(encoding="utf-8") if CATALOG_PATH.exists() else ""
        if current != text:
            print("keras_catalog.json is out of date with the installed Keras; run `make catalog`")
            return 1
        return 0
    CATALOG_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {CATALOG_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
