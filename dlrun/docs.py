"""Editor schema and recipe reference, generated from the pydantic models and the Keras catalog.

`docs/recipe.schema.json` is `Recipe.model_json_schema()` made useful in an editor: layer `type`s
complete from the Keras layer names (plus `applications.X`, import paths and user-defined block and
sub-model names), each layer class suggests its own keyword arguments with their kinds and defaults,
and the shorthands the loader accepts (a bare string for a component, a single `inputs` name) validate.
`docs/recipes.md` is a reference of every section, key, type, default and description.

`make docs` (`python -m dlrun.docs --write`) regenerates both; `tests/test_docs.py` fails when either is
stale. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dlrun.graph import catalog
from dlrun.recipe import schema as recipe_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "recipe.schema.json"
REFERENCE_FILE = ROOT / "docs" / "recipes.md"
SCHEMA_ID = "https://dlrun.dev/recipe.schema.json"

EXPRESSION = {
    "type": "string",
    "pattern": r"\$\{.*\}",
    "description": "A block parameter or expression, e.g. `${filters}` or `${2 if index == 0 else 1}`.",
}
IMPORT_PATH = r"^[A-Za-z_][\w.]*(\.py)?:[A-Za-z_][\w.]*$"
USER_NAME = recipe_schema.NAME_PATTERN

_KIND_SCHEMA: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "ints": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]},
}

# Which catalog section a component refers to, by the property that holds it.
_COMPONENT_PLACES = {
    ("CompileSpec", "optimizer"): "Optimizer",
    ("StageSpec", "optimizer"): "Optimizer",
    ("CompileSpec", "loss"): "Loss",
    ("CompileSpec", "metrics"): "Metric",
    ("TrainSpec", "callbacks"): "Callback",
    ("StageSpec", "callbacks"): "Callback",
    ("FeatureSpec", "preprocess"): "Preprocess",
}

# Descriptions for keys whose pydantic field has none (shown in the editor on hover and in the reference).
NOTES: dict[str, dict[str, str]] = {
    "Recipe": {
        "$schema": "Ignored by dlrun; editors read the schema from the `# yaml-language-server: $schema=` comment.",
        "name": "The recipe's name: runs go to `runs/<name>/<timestamp>/`; also the model's name.",
        "description": "Free text.",
        "seed": "Seeds Python, NumPy and the backend (weights, shuffling, splits).",
        "blocks": "Parameterized sub-graphs, expanded inline wherever a node says `type: <block name>`.",
        "data": "Where the training data comes from and how it maps onto model inputs and outputs.",
        "model": "The functional graph: inputs, layers, outputs, sub-models.",
        "compile": "`model.compile(...)`: optimizer, losses, metrics.",
        "train": "`model.fit(...)`: epochs, batch size, callbacks, stages.",
        "eval": "Which split `dlrun train` and `dlrun eval` evaluate on.",
        "expect": "Facts `dlrun check` asserts about the built model.",
    },
    "ModelSpec": {
        "inputs": "Named model inputs: `{image: {shape: [28, 28, 1]}}`.",
        "layers": "The nodes, in order; a node without `inputs` takes the previous one.",
        "name": "The Keras model's name (default: the recipe's name).",
        "submodels": "Named sub-graphs built once as `keras.Model`s; `type: <name>` calls one (shared weights).",
    },
    "SubModelSpec": {
        "inputs": "Named inputs of the sub-model.",
        "layers": "The sub-model's nodes.",
        "trainable": "False freezes the whole sub-model.",
    },
    "InputSpec": {
        "shape": "Shape without the batch axis; `null` for a variable-length axis.",
        "dtype": "float32, int32, string, ...",
        "sparse": "A sparse input tensor.",
    },
    "LayerNode": {
        "name": "The node's (and its Keras layer's) name; default: the snake-cased type, numbered.",
        "type": "A keras.layers class, `ops.<function>`, `applications.<Model>`, a block, a sub-model, or "
        "`module:Class`.",
        "inputs": "Earlier nodes or model inputs (a list for merge layers), `node[k]` for one of several "
        "outputs; default: the previous node.",
    },
    "BlockSpec": {
        "inputs": "Names the block's nodes use for what the block is given.",
        "layers": "The block's nodes; `${param}` and `${expression}` are substituted per use.",
    },
    "DataSpec": {
        "inputs": "Per model input: where its arrays come from and how they are prepared.",
        "targets": "Per model output: where its targets come from and how they are prepared.",
        "validation_split": "Hold out this fraction of train for validation.",
        "color_mode": "Images: channels to decode.",
        "delimiter": "CSV field separator.",
        "memory_budget_mb": "Above this size, file data is streamed (`stream: auto`).",
        "shuffle_buffer": "Rows in the shuffle buffer when streaming.",
    },
    "Step": {
        "reshape": "New shape without the batch axis.",
        "scale": "`x * multiply / divide + offset`.",
        "one_hot": "One-hot encode integer labels into this many classes.",
        "cast": "Cast to this dtype.",
        "standardize": "Subtract the mean and divide by the standard deviation (of the training split).",
    },
    "CompileSpec": {
        "optimizer": "`adam`, or `{type: Adam, learning_rate: 0.001}`; `learning_rate` may be a schedule.",
        "loss": "One loss for all outputs, or `{output: loss}` per output.",
        "loss_weights": "`{output: weight}` for multi-output models.",
        "metrics": "A list for all outputs, or `{output: [metrics]}`.",
        "jit_compile": "XLA compilation (auto: Keras decides).",
        "steps_per_execution": "Batches per compiled call.",
    },
    "Component": {"type": "A Keras class name, a string identifier (`adam`, `mse`), or `module:Name`."},
    "TrainSpec": {
        "epochs": "Epochs to train (when there are no `stages`).",
        "batch_size": "Samples per batch.",
        "shuffle": "Shuffle the training data every epoch.",
        "callbacks": "Keras callbacks; their files (checkpoints, logs) default into the run folder.",
        "stages": "Successive fits with different trainable layers / optimizers (transfer learning).",
        "deterministic": "Deterministic TensorFlow ops (slower; reproducible on the same machine).",
    },
    "StageSpec": {
        "name": "Shown in the progress output.",
        "epochs": "Epochs in this stage.",
        "optimizer": "This stage's optimizer (default: compile.optimizer).",
        "loss_weights": "This stage's loss weights.",
        "callbacks": "Callbacks for this stage only.",
    },
    "EvalSpec": {
        "split": "The split to evaluate on.",
        "batch_size": "Default: train.batch_size.",
    },
    "ExpectSpec": {
        "params": "Total parameter count.",
        "trainable_params": "Trainable parameter count.",
        "output_shapes": "`{output: [null, 10]}` (with the batch axis as null).",
    },
}


def _add_notes(defs: dict[str, Any], root: dict[str, Any]) -> None:
    for owner, notes in NOTES.items():
        spec = root if owner == "Recipe" else defs.get(owner)
        if spec is None:
            continue
        for key, text in notes.items():
            prop = spec.get("properties", {}).get(key)
            if prop is not None and not prop.get("description"):
                prop["description"] = text


def _kind_def(kind: str, nullable: bool) -> str:
    """Name of the shared definition for an argument kind: `KerasInt`, `KerasIntOrNull`, ..."""
    return f"Keras{kind.capitalize()}{'OrNull' if nullable else ''}"


def _kind_defs() -> dict[str, Any]:
    out = {}
    for kind, base in _KIND_SCHEMA.items():
        for nullable in (False, True):
            options = [copy.deepcopy(base), {"$ref": "#/$defs/Expression"}]
            if nullable:
                options.append({"type": "null"})
            out[_kind_def(kind, nullable)] = {"anyOf": options}
    return out


def _default_text(value: Any) -> str:
    return json.dumps(value)


def _case_insensitive(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _value_schema(meta: dict[str, Any], facts: dict[str, Any], nullable: bool) -> dict[str, Any] | None:
    """The values Keras accepts for one argument (catalog `values`), as JSON Schema; None when unconstrained."""
    options: list[dict[str, Any]] = []
    if "registry" in facts:  # Keras' get(None) is "none" for every registry
        return {"$ref": f"#/$defs/{_registry_def(facts['registry'], True)}"}
    if "enum" in facts:  # validate checks strings only (use_cudnn: "auto" or a bool)
        options = [{"enum": facts["enum"]}, {"not": {"type": "string"}}]
        if facts.get("case_insensitive"):
            words = "|".join(_case_insensitive(w) for w in facts["enum"])
            options.append({"type": "string", "pattern": f"^(?:{words})$"})
    else:
        bounds = {
            key: facts[name]
            for name, key in (
                ("minimum", "minimum"),
                ("maximum", "maximum"),
                ("exclusive_minimum", "exclusiveMinimum"),
                ("exclusive_maximum", "exclusiveMaximum"),
            )
            if name in facts
        }
        if not bounds or meta["kind"] not in _KIND_SCHEMA:
            return None
        number = {**copy.deepcopy(_KIND_SCHEMA[meta["kind"] if meta["kind"] != "ints" else "int"]), **bounds}
        options = [number]
        if meta["kind"] == "ints":
            options.append({"type": "array", "items": number})
    options.append({"$ref": "#/$defs/Expression"})
    if nullable:
        options.append({"type": "null"})
    return {"anyOf": options}


def _registry_def(registry: str, nullable: bool) -> str:
    """Name of the shared definition for a registry's identifiers: `KerasActivations`, ..."""
    return f"Keras{registry.capitalize()}{'OrNull' if nullable else ''}"


def _registry_defs() -> dict[str, Any]:
    out = {}
    for registry, names in catalog.load_catalog().get("registries", {}).items():
        for nullable in (False, True):
            options: list[dict[str, Any]] = [
                {"enum": names, "description": f"A keras.{registry} identifier."},
                {"type": "string", "pattern": IMPORT_PATH},
                {"type": "object", "description": "A nested `{type: ..., ...}` object."},
                {"$ref": "#/$defs/Expression"},
            ]
            if nullable:
                options.append({"type": "null"})
            out[_registry_def(registry, nullable)] = {"anyOf": options}
    return out


def _argument_schema(meta: dict[str, Any], facts: dict[str, Any] | None = None, doc: str = "") -> dict[str, Any]:
    """JSON Schema for one Keras keyword argument from its catalog entry (kind, values, docs)."""
    out: dict[str, Any] = {}
    nullable = meta["nullable"] or (not meta["required"] and meta["default"] is None)
    values = _value_schema(meta, facts, nullable) if facts else None
    if values is not None:
        out.update(values)
    elif meta["kind"] in _KIND_SCHEMA:
        out["$ref"] = f"#/$defs/{_kind_def(meta['kind'], nullable)}"
    lead = f"{doc} " if doc else ""  # the catalog keeps each argument's first sentence
    if meta["required"]:
        out["description"] = f"{lead}Required."
    else:
        out["default"] = meta["default"]
        out["description"] = f"{lead}Default: {_default_text(meta['default'])}."
    return out


def _arguments(entry: dict[str, Any], *, layer: bool) -> dict[str, Any]:
    docs = entry.get("arg_docs", {})
    base_values = catalog.load_catalog().get("base_layer_values", {}) if layer else {}
    props = {
        name: _argument_schema(meta, entry.get("values", {}).get(name), docs.get(name, ""))
        for name, meta in sorted(entry["params"].items())
        if name != "name"
    }
    if layer and entry.get("var_kwargs"):
        for name in catalog.BASE_LAYER_KWARGS:
            if name not in props and name not in ("name", "input_shape", "input_dim"):
                prop: dict[str, Any] = {"description": "Base keras.layers.Layer argument."}
                if name in base_values:
                    fake = {"kind": "any", "required": False, "default": None, "nullable": True}
                    prop.update(_value_schema(fake, base_values[name], True) or {})
                props[name] = prop
    return props


def _component_def(section: str, title: str, description: str, *, extra_names: list[str] = ()) -> dict[str, Any]:
    """A `{type: Name, ...kwargs}` object (or bare string) whose `type` completes from a catalog section."""
    names = sorted({*catalog.names(section), *catalog.aliases(section), *extra_names})
    type_schema = {
        "anyOf": [
            {"enum": names},
            {"type": "string", "pattern": IMPORT_PATH, "description": "Custom code: `module.path:Name`."},
            {"type": "string", "minLength": 1},
        ],
        "description": f"A keras.{section} name or string identifier, or an import path `module:Name`.",
    }
    conditionals = []
    for name in catalog.names(section):
        entry = catalog.entry(section, name)
        if entry is None or entry["kind"] != "class" or not entry["params"]:
            continue
        conditionals.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": _arguments(entry, layer=False)},
            }
        )
    obj: dict[str, Any] = {
        "type": "object",
        "properties": {"type": type_schema},
        "required": ["type"],
        "additionalProperties": True,
    }
    if conditionals:
        obj["allOf"] = conditionals
    return {
        "title": title,
        "description": description,
        "anyOf": [{"enum": names}, {"type": "string", "minLength": 1}, obj],
    }


def _replace_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: (new if k == "$ref" and v == old else _replace_refs(v, old, new)) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_refs(v, old, new) for v in node]
    return node


def _string_or_list(prop: dict[str, Any]) -> dict[str, Any]:
    """`inputs: a` is shorthand for `inputs: [a]`."""
    out = copy.deepcopy(prop)
    options = out.get("anyOf")
    if options is not None and not any(o.get("type") == "string" for o in options):
        out["anyOf"] = [{"type": "string"}, *options]
    return out


def near_misses(names: list[str]) -> list[str]:
    """One-edit misspellings of Keras names (a letter dropped or two swapped, the case changed) that are not
    themselves names: the editor flags `type: Dens`, which validate also refuses unless a block has that name."""
    real = set(names)
    out: set[str] = set()
    for name in names:
        out |= {name.lower(), name.upper()}
        out |= {name[:i] + name[i + 1 :] for i in range(len(name))}
        out |= {name[:i] + name[i + 1] + name[i] + name[i + 2 :] for i in range(len(name) - 1)}
    return sorted(w for w in out - real if len(w) > 2)


def _layer_type_schema() -> dict[str, Any]:
    apps = [f"applications.{name}" for name in catalog.names("applications")]
    layers = catalog.names("layers")
    ops = [f"ops.{name}" for name in catalog.names("ops")]
    return {
        "anyOf": [
            {
                "enum": layers,
                "description": "A keras.layers class.",
                "enumDescriptions": [catalog.entry("layers", n).get("doc", "") for n in layers],
            },
            {"enum": apps, "description": "A keras.applications model (set `weights`)."},
            {"enum": ops, "description": "A keras.ops function; its arguments by their Keras names."},
            {"type": "string", "pattern": IMPORT_PATH, "description": "Custom layer: `module.path:Class`."},
            {
                "type": "string",
                "pattern": USER_NAME,
                "not": {"enum": near_misses(layers)},
                "description": "A block or sub-model defined in this recipe (not a misspelt Keras layer).",
            },
        ],
        "description": "A keras.layers class name, `ops.<function>`, `applications.<Model>`, a block or "
        "sub-model name, or an import path `module:Class`.",
    }


def _reserved() -> dict[str, Any]:
    """The node keys that are not layer arguments (validated by the node's own properties)."""
    return {key: {} for key in recipe_schema.LayerNode.RESERVED}


def _layer_conditionals() -> list[dict[str, Any]]:
    out = []
    for name in catalog.names("layers"):
        entry = catalog.entry("layers", name)
        assert entry is not None
        props = _arguments(entry, layer=True)
        props["type"] = {"description": f"{name}: {entry.get('doc', '')}"}
        # Only this layer's arguments: a typo (`unit:`) is flagged on its key, as validate does.
        then: dict[str, Any] = {"properties": {**_reserved(), **props}, "additionalProperties": False}
        required = [p for p, meta in entry["params"].items() if meta["required"] and p != "name"]
        if required:
            then["required"] = sorted(required)
        out.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then})
    for name in catalog.names("applications"):
        entry = catalog.entry("applications", name)
        assert entry is not None
        props = {k: v for k, v in _arguments(entry, layer=False).items() if k not in ("input_tensor", "input_shape")}
        props["trainable"] = {"type": "boolean", "default": True, "description": "Freeze the whole backbone."}
        props["include_top"]["default"] = False
        props["include_top"]["description"] = "Default in dlrun: false (a backbone)."
        props["type"] = {"description": f"applications.{name}: {entry.get('doc', '')}"}
        out.append(
            {
                "if": {"properties": {"type": {"const": f"applications.{name}"}}, "required": ["type"]},
                "then": {"properties": {**_reserved(), **props}, "additionalProperties": False},
            }
        )
    return out


def editor_schema() -> dict[str, Any]:
    """The recipe JSON Schema, enriched for editor completion and shorthand forms."""
    schema = recipe_schema.Recipe.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    _add_notes(defs, schema)
    defs["Expression"] = EXPRESSION
    defs.update(_kind_defs())
    defs.update(_registry_defs())

    # Components: one definition per catalog section, so each completes its own names and arguments.
    component_doc = defs["Component"]["description"]
    defs["Optimizer"] = _component_def("optimizers", "Optimizer", component_doc)
    if "Optimizer" in defs and "anyOf" in defs["Optimizer"]:
        obj = defs["Optimizer"]["anyOf"][2]
        obj["properties"]["learning_rate"] = {
            "anyOf": [{"type": "number"}, {"$ref": "#/$defs/Expression"}, {"$ref": "#/$defs/Schedule"}],
            "description": "A number, or a learning-rate schedule `{type: ExponentialDecay, ...}`.",
        }
        for conditional in obj.get("allOf", []):
            conditional["then"]["properties"].pop("learning_rate", None)
    defs["Schedule"] = _component_def("schedules", "Schedule", "A keras.optimizers.schedules class and its arguments.")
    defs["Loss"] = _component_def("losses", "Loss", component_doc)
    metric_ids = ["accuracy", "acc", "mse", "mae", "mape", "msle", "crossentropy"]
    defs["Metric"] = _component_def("metrics", "Metric", component_doc, extra_names=metric_ids)
    defs["Callback"] = _component_def("callbacks", "Callback", component_doc)
    defs["Preprocess"] = {
        "title": "Preprocess",
        "description": "A Keras preprocessing layer (adapted on the training split) or dlrun's "
        "`MinMaxScaling` / `preprocess_input`.",
        "anyOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "object",
                "properties": {
                    "type": {
                        "anyOf": [
                            {"enum": [*catalog.names("layers"), "MinMaxScaling", "preprocess_input"]},
                            {"type": "string", "minLength": 1},
                        ]
                    }
                },
                "required": ["type"],
                "additionalProperties": True,
            },
        ],
    }
    for (owner, prop), target in _COMPONENT_PLACES.items():
        if owner in defs and prop in defs[owner].get("properties", {}):
            props = defs[owner]["properties"]
            props[prop] = _replace_refs(props[prop], "#/$defs/Component", f"#/$defs/{target}")
    compile_props = defs["CompileSpec"]["properties"]
    compile_props["metrics"] = {
        "anyOf": [
            {"$ref": "#/$defs/Metric"},
            {"type": "array", "items": {"$ref": "#/$defs/Metric"}},
            {
                "type": "object",
                "additionalProperties": {
                    "anyOf": [{"$ref": "#/$defs/Metric"}, {"type": "array", "items": {"$ref": "#/$defs/Metric"}}]
                },
                "description": "Per output name.",
            },
        ],
        "default": [],
        "description": "Metrics for all outputs (a list), or per output name.",
        "title": "Metrics",
    }
    if not _refers(schema, "#/$defs/Component"):
        del defs["Component"]

    # Layer nodes: `type` completes from Keras layer names; each class suggests its own arguments.
    node = defs["LayerNode"]
    node["properties"]["type"] = _layer_type_schema()
    node["properties"]["inputs"] = _string_or_list(node["properties"]["inputs"])
    node["allOf"] = _layer_conditionals()
    for graph_def in ("ModelSpec", "SubModelSpec", "GraphSpec"):
        if graph_def in defs and "outputs" in defs[graph_def]["properties"]:
            defs[graph_def]["properties"]["outputs"] = _string_or_list(defs[graph_def]["properties"]["outputs"])

    # `distribute: data_parallel` is shorthand for `distribute: {strategy: data_parallel}`.
    if "DistributeSpec" in defs and "distribute" in defs["TrainSpec"]["properties"]:
        strategy = defs["DistributeSpec"]["properties"]["strategy"]
        props = defs["TrainSpec"]["properties"]
        props["distribute"] = {"anyOf": [{"enum": strategy["enum"]}, props["distribute"]], "default": None}

    # Data sources: an enum of the known kinds.
    sources = getattr(recipe_schema, "DATA_SOURCES", (*recipe_schema.KERAS_DATASETS, "npz"))
    if "DataSpec" in defs and "source" in defs["DataSpec"]["properties"]:
        defs["DataSpec"]["properties"]["source"]["enum"] = list(sources)

    _allow_extends(schema, defs)
    schema["$defs"] = dict(sorted(defs.items()))
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "dlrun recipe",
    }
    out.update({k: v for k, v in schema.items() if k not in out and k != "title"})
    return out


EXTENDS = {
    "anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}}],
    "description": "Recipe file(s) this one builds on, relative to this file: mappings merge key by key "
    "(this file wins), lists and values replace. Required keys may then come from the parent.",
}


def _partial_ref(node: Any, mergeable: set[str], *, in_items: bool = False) -> Any:
    """`node` with refs to mergeable sections pointing at their partial forms (not inside list items, which a
    child replaces whole)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and not in_items and value.rsplit("/", 1)[-1] in mergeable:
                out[key] = value + "Partial"
            else:
                out[key] = _partial_ref(value, mergeable, in_items=in_items or key in ("items", "prefixItems"))
        return out
    if isinstance(node, list):
        return [_partial_ref(v, mergeable, in_items=in_items) for v in node]
    return node


def _allow_extends(root: dict[str, Any], defs: dict[str, Any]) -> None:
    """A recipe with `extends:` may leave out what its parent gives: required keys are required only
    without `extends`, at the top and in every section a child merges into."""
    mergeable = {
        name
        for name, spec in defs.items()
        if spec.get("type") == "object" and "properties" in spec and name != "LayerNode"
    }
    for name in sorted(mergeable):
        partial = _partial_ref({k: v for k, v in defs[name].items() if k != "required"}, mergeable)
        defs[f"{name}Partial"] = partial
    props = root["properties"]
    props["extends"] = EXTENDS
    sections = [k for k, v in props.items() if "$ref" in json.dumps(v)]
    full = {k: props[k] for k in sections}
    for key in sections:
        props[key] = {k: v for k, v in props[key].items() if k in ("description", "title")}
    required = root.pop("required", [])
    root["if"] = {"required": ["extends"]}
    root["then"] = {"properties": _partial_ref(full, mergeable)}
    root["else"] = {"properties": full, "required": required}


def _refers(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_refers(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_refers(v, ref) for v in node)
    return False


def schema_text() -> str:
    """`docs/recipe.schema.json` as text (stable: sorted definitions)."""
    return json.dumps(editor_schema(), indent=1, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------------------------------
# reference (Markdown)

_SECTION_ORDER = [
    "Recipe",
    "ModelSpec",
    "InputSpec",
    "LayerNode",
    "SubModelSpec",
    "BlockSpec",
    "DataSpec",
    "FeatureSpec",
    "Step",
    "ScaleStep",
    "CompileSpec",
    "Component",
    "TrainSpec",
    "StageSpec",
    "MlflowSpec",
    "EvalSpec",
    "ExpectSpec",
]
_WHERE = {
    "Recipe": "the top level",
    "ModelSpec": "`model`",
    "InputSpec": "`model.inputs.<name>`",
    "LayerNode": "`model.layers[]`, `model.submodels.<name>.layers[]`, `blocks.<name>.layers[]`",
    "SubModelSpec": "`model.submodels.<name>`",
    "BlockSpec": "`blocks.<name>`",
    "DataSpec": "`data`",
    "FeatureSpec": "`data.inputs.<name>`, `data.targets.<name>`",
    "Step": "`data.inputs.<name>.steps[]`",
    "ScaleStep": "`steps[].scale`",
    "CompileSpec": "`compile`",
    "Component": "optimizers, losses, metrics, callbacks, `preprocess` layers",
    "TrainSpec": "`train`",
    "StageSpec": "`train.stages[]`",
    "MlflowSpec": "`train.mlflow`",
    "EvalSpec": "`eval`",
    "ExpectSpec": "`expect`",
}


def _anchor(name: str) -> str:
    return f"#{name.lower()}"


def _type_text(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}]({_anchor(name)})"
    if "anyOf" in prop:
        parts = [_type_text(p) for p in prop["anyOf"]]
        return " | ".join(dict.fromkeys(parts))
    if "enum" in prop:
        return " | ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items")
        return f"list[{_type_text(items)}]" if items else "list"
    if kind == "object":
        extra = prop.get("additionalProperties")
        if not isinstance(extra, dict) and prop.get("patternProperties"):
            extra = next(iter(prop["patternProperties"].values()))
        if isinstance(extra, dict):
            return f"map[name, {_type_text(extra)}]"
        return "mapping"
    names = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null"}
    text = names.get(kind, str(kind) if kind else "any")
    limits = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in prop:
            limits.append(f"{sign} {prop[key]}")
    return f"{text} ({', '.join(limits)})" if limits else text


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _default_cell(prop: dict[str, Any], required: bool, model_field: FieldInfo | None) -> str:
    if required:
        return "**required**"
    if "default" in prop:
        return f"`{json.dumps(prop['default'], ensure_ascii=False)}`"
    if model_field is not None and model_field.default_factory is not None:
        try:
            value = model_field.default_factory()
        except TypeError:
            return "—"
        if hasattr(value, "model_dump"):
            return "(section defaults)"
        return f"`{json.dumps(value, ensure_ascii=False)}`"
    return "—"


def _model_class(name: str) -> type[BaseModel] | None:
    cls = getattr(recipe_schema, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def reference_text() -> str:
    """`docs/recipes.md`: every section of the recipe format as a table of keys."""
    schema = recipe_schema.Recipe.model_json_schema(by_alias=True)
    defs = dict(schema.pop("$defs"))
    _add_notes(defs, schema)
    defs["Recipe"] = schema
    order = [n for n in _SECTION_ORDER if n in defs] + sorted(n for n in defs if n not in _SECTION_ORDER)
    lines = [
        "<!-- Generated by `make docs` (python -m dlrun.docs --write) from dlrun/recipe/schema.py; do not edit. -->",
        "",
        "# Recipe reference",
        "",
        "Every key of a dlrun recipe, section by section: its type, its default and what it does. Unknown keys",
        "are errors everywhere except where Keras' own keyword arguments go (layer nodes, optimizers, losses,",
        "metrics, callbacks), which are checked against the Keras constructor signatures instead.",
        "",
        "Editors: start a recipe with `# yaml-language-server: $schema=<path to docs/recipe.schema.json>` for",
        "completion of sections, keys, Keras layer names and each layer's arguments (`dlrun schema` prints it).",
        "",
        "## Contents",
        "",
    ]
    for name in order:
        lines.append(f"- [{name}]({_anchor(name)}) — {_WHERE.get(name, '')}".rstrip(" —"))
    lines.append("")
    for name in order:
        spec = defs[name]
        cls = _model_class(name)
        lines += [f"## {name}", ""]
        if name in _WHERE:
            lines += [f"Where: {_WHERE[name]}.", ""]
        description = spec.get("description") or (cls.__doc__ if cls is not None else "") or ""
        for para in description.strip().split("\n\n"):
            if para.strip():
                lines += [" ".join(para.split()), ""]
        props = spec.get("properties", {})
        required = set(spec.get("required", []))
        if props:
            lines += ["| key | type | default | description |", "|---|---|---|---|"]
            fields = {(f.alias or k): f for k, f in cls.model_fields.items()} if cls is not None else {}
            for key, prop in props.items():
                desc = prop.get("description", "")
                lines.append(
                    f"| `{key}` | {_cell(_type_text(prop))} | {_default_cell(prop, key in required, fields.get(key))} "
                    f"| {_cell(desc)} |"
                )
            lines.append("")
        if spec.get("additionalProperties") is True:
            lines += ["Other keys: the Keras keyword arguments of the named class.", ""]
    lines += _composing_and_checking()
    lines += [
        "## Names known to Keras",
        "",
        f"From the catalog of Keras {catalog.load_catalog().get('keras_version', '')} (`make catalog`).",
        "",
    ]
    for section, title in (
        ("layers", "Layer types (`type:` of a node)"),
        ("applications", "Pretrained models (`type: applications.<Model>`)"),
        ("ops", "Operations (`type: ops.<function>`)"),
        ("regularizers", "Regularizers (`kernel_regularizer: {type: ...}`)"),
        ("initializers", "Initializers (`kernel_initializer: {type: ...}`)"),
        ("constraints", "Constraints (`kernel_constraint: {type: ...}`)"),
        ("optimizers", "Optimizers"),
        ("schedules", "Learning-rate schedules"),
        ("losses", "Losses"),
        ("metrics", "Metrics"),
        ("callbacks", "Callbacks"),
    ):
        names = catalog.names(section)
        aliases = sorted(catalog.aliases(section))
        lines += [f"### {title}", "", ", ".join(f"`{n}`" for n in names), ""]
        if aliases:
            lines += ["String identifiers: " + ", ".join(f"`{a}`" for a in aliases), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _composing_and_checking() -> list[str]:
    """The reference's sections on `extends` and on what `validate` finds versus `check` and `train`."""
    from dlrun.graph.lint import RULES
    from dlrun.validation import FOUND_LATER, MAX_ERRORS

    lines = [
        "## Composing recipes: `extends`",
        "",
        "`extends: parent.yaml` (or a list of files, merged in order) at the top of a recipe starts from the",
        "parent recipe(s), paths relative to this file. Mappings merge key by key, this file winning; lists",
        "(`model.layers`, `callbacks`, `stages`) and values replace the parent's whole. So a child can be as",
        "small as `extends: mnist.yaml` plus `train: {epochs: 1}`; `--set` overrides and `${...}` apply after",
        "the merge. Chains go up to 8 files deep. The editor schema knows `extends`: a recipe with it may leave",
        "out what its parent gives (required keys are required only without `extends`).",
        "",
        "## What `validate` checks, and what only `check` or `train` finds",
        "",
        f"`dlrun validate` (no TensorFlow) reports every independent error at once, in file order (at most {MAX_ERRORS}):",
        "the schema, the graph (types, references, cycles, outputs), each Keras argument's name, kind and value",
        "(identifiers from Keras' registries, string choices and numeric ranges its constructors enforce, read",
        "by `make catalog`), compile and callbacks. Then the lint rules, as warnings (errors with `--strict`;",
        "`dlrun validate --explain RULE`):",
        "",
    ]
    lines += [f"- `{r.name}`: {r.summary}." for r in RULES.values()]
    lines += ["", "Still found only later (a recipe `validate` passes may fail there):", ""]
    lines += [f"- {what}" for what in FOUND_LATER]
    return [*lines, ""]


def generated() -> dict[Path, str]:
    """Each generated file and its current content."""
    return {SCHEMA_FILE: schema_text(), REFERENCE_FILE: reference_text()}


def stale() -> list[Path]:
    """Generated files whose checked-in content differs from what the code generates now."""
    return [
        path for path, text in generated().items() if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        for path, text in generated().items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if args == ["--check"]:
        old = stale()
        for path in old:
            print(f"stale: {path.relative_to(ROOT)} (run `make docs`)")
        return 1 if old else 0
    print("usage: python -m dlrun.docs --write | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
