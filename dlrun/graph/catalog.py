"""What Keras offers by name, and each constructor's arguments, usable without importing TensorFlow.

The facts live in `keras_catalog.json`, generated from the installed Keras by `make catalog`
(`python -m dlrun.graph.catalog --write`); a test regenerates it and compares, so it cannot drift silently.
Argument kinds come from the constructor signature (required or not, default) and the first words of
each argument's docstring ("Positive integer, ..." -> int), which is how Keras documents them.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

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


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str:
    """' (did you mean X?)' when a close candidate exists, else ''."""
    pool = list(candidates)
    lowered = {c.lower(): c for c in pool}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f" (did you mean {lowered[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.75)
    if not close:
        close = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]!r}?)" if close else ""


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


def _call_params(cls: Any) -> dict[str, Any]:
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
    return out


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
