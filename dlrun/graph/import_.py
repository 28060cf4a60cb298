"""`dlrun import`: a saved Keras functional or Sequential model -> a readable recipe.

The model file is loaded with `safe_mode=True` (no Lambda code runs) and read through `get_config()`:
model inputs from its InputLayers; one node per layer call, `type` = the Keras class name and only the
arguments that differ from the constructor's defaults (each candidate simplification is verified by
rebuilding the layer and comparing configs); `inputs` only where a node does not take the previous one;
`share:` for the second and later calls of a layer; nested functional/Sequential models as
`model.submodels`; a `compile:` section from the model's compile config (or a placeholder loss chosen from
the output activations, so the recipe validates); `expect:` with the parameter counts and output shapes.
Repeated structure is then folded into `blocks:` (fold.py); classes of modules named with `--imports`
become `module:Class` nodes with the module under `imports:`.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dlrun.errors import RecipeError
from dlrun.graph import catalog, nested
from dlrun.recipe.schema import NAME_PATTERN
from dlrun.util import snake_case

if TYPE_CHECKING:
    import keras

MODEL_CLASSES = ("Functional", "Sequential", "Model")
ADAPTED_LAYERS = ("Normalization", "TextVectorization", "StringLookup", "IntegerLookup", "Discretization")
_NAME_RE = re.compile(NAME_PATTERN)


def _canon(value: Any) -> Any:
    """JSON-comparable form of a config (tuples -> lists; registered_name noise dropped)."""
    return json.loads(json.dumps(value, default=str))


def _short_float(value: float) -> float:
    """0.0010000000474974513 (a float32 read back) -> 0.001."""
    import numpy as np

    single = np.float32(value)
    if float(single) == value:
        return float(str(single))
    return value


def _simpler(value: Any) -> list[Any]:
    """Candidate shorter spellings of one argument value, most readable first."""
    out: list[Any] = []
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        config = value.get("config") or {}
        module = str(value.get("module") or "")
        if value["class_name"] == "DTypePolicy" and isinstance(config, dict) and "name" in config:
            out.append(config["name"])
        elif not any(v is not None for v in config.values()):
            out.append(snake_case(value["class_name"]))
        if module.startswith("keras"):
            out.append({"class_name": value["class_name"], "config": config})
    elif (
        isinstance(value, list | tuple) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        if len(set(value)) == 1:
            out.append(value[0])
    elif isinstance(value, float):
        short = _short_float(value)
        if short != value:
            out.append(short)
    return out


def minimal_kwargs(
    cls: Any, config: dict[str, Any], defaults: dict[str, Any], *, drop: tuple[str, ...], ignore: tuple[str, ...] = ()
) -> dict:
    """The arguments of `cls` that rebuild `config`: defaults dropped, values shortened, all verified.

    `drop` keys are passed as they are and left out of the result (a layer's name); `ignore` keys are
    not compared (an optimizer's automatic name). `defaults` are the catalog's constructor defaults. When
    the class cannot rebuild its own config from its constructor, only the defaults are dropped (unverified).
    """
    base = {k: v for k, v in config.items() if k not in drop}

    def canon(cfg: dict[str, Any]) -> Any:
        return _canon({k: v for k, v in cfg.items() if k not in ignore})

    try:
        reference = canon(cls.from_config(config).get_config())
    except Exception:
        reference = None

    def same(kwargs: dict[str, Any]) -> bool:
        try:
            return canon(cls(**{k: config[k] for k in drop if k in config}, **kwargs).get_config()) == reference
        except Exception:
            return False

    def is_default(key: str, value: Any) -> bool:
        if key == "trainable" and value is True:
            return True
        if key == "dtype" and isinstance(value, dict) and (value.get("config") or {}).get("name") == "float32":
            return True
        if key in defaults and _canon(defaults[key]) == _canon(value):
            return True
        return key in defaults and isinstance(value, dict) and _simpler(value)[:1] == [defaults[key]]

    if reference is None or not same(base):
        return _canon({k: v for k, v in base.items() if not is_default(k, v)})
    kwargs = {k: v for k, v in base.items() if not is_default(k, v)}
    if not same(kwargs):
        kwargs = dict(base)
    for key in list(kwargs):
        trial = {k: v for k, v in kwargs.items() if k != key}
        if same(trial):
            kwargs = trial
    for key, value in list(kwargs.items()):
        for alternative in _simpler(value):
            trial = {**kwargs, key: alternative}
            if same(trial):
                kwargs = trial
                break
    return _canon(kwargs)


def _layer_defaults(class_name: str) -> dict[str, Any]:
    entry = catalog.entry("layers", class_name) or {"params": {}}
    return {k: p["default"] for k, p in entry["params"].items() if not p["required"]}


# ----------------------------------------------------------------------------------------------------
# the graph


@dataclass
class _Call:
    layer: str  # Keras layer name
    index: int  # node index of this call
    refs: list[tuple[str, int, int]]  # (layer, node index, tensor index) of its inputs
    multi: bool  # inputs given as a list
    call: dict[str, Any]  # tensors in it are `_Tensor`s
    deps: list[tuple[str, int]] = field(default_factory=list)
    op: bool = False  # a keras.ops operation: `call` holds its arguments beyond the leading tensors


@dataclass(frozen=True)
class _Tensor:
    """A tensor inside call arguments: (layer, node index, tensor index)."""

    ref: tuple[str, int, int]


def _tensors_in(value: Any, where: str) -> Any:
    """A call value with each serialized tensor replaced by a `_Tensor`."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return _Tensor(_history(value, where))
    if isinstance(value, list | tuple):
        return [_tensors_in(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _tensors_in(v, where) for k, v in value.items()}
    return value


def _markers(value: Any) -> list[_Tensor]:
    if isinstance(value, _Tensor):
        return [value]
    if isinstance(value, list):
        return [m for v in value for m in _markers(v)]
    if isinstance(value, dict):
        return [m for v in value.values() for m in _markers(v)]
    return []


OPS_MODULE = "keras.src.ops"


def _history(tensor: Any, where: str) -> tuple[str, int, int]:
    if isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__":
        layer, node, index = tensor["config"]["keras_history"]
        return str(layer), int(node), int(index)
    raise RecipeError(f"{where}: a call argument that is not a tensor ({str(tensor)[:60]}); recipes pass tensors only")


def _is_tensor(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("class_name") == "__keras_tensor__" or any(_is_tensor(v) for v in value.values())
    if isinstance(value, list):
        return any(_is_tensor(v) for v in value)
    return False


def _call_kwargs(class_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Call arguments worth writing: not None and not the `call` signature's default (Keras records those)."""
    import inspect

    import keras

    try:
        params = inspect.signature(getattr(keras.layers, class_name).call).parameters
    except (AttributeError, TypeError, ValueError):
        params = {}
    out = {}
    for key, value in kwargs.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if value is None or (default is not inspect.Parameter.empty and default == value):
            continue
        out[key] = value
    return out


def _ref_list(value: Any) -> list[tuple[str, int, int]]:
    """`input_layers` / `output_layers`: one [name, node, index] triple, a list of them, or a dict."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [(value[0], int(value[1]), int(value[2]))]
    return [(str(v[0]), int(v[1]), int(v[2])) for v in value]


def load_custom_classes(imports: list[str]) -> dict[str, tuple[str, type]]:
    """Import the modules named by `--imports` (a dotted module, or a `.py` file) and map each class they
    define, by its Keras registered name (`package>Class`) and by its class name, to (the `imports:`
    entry, the class). Importing runs the module: the user asked for it on the command line."""
    import importlib

    import keras

    from dlrun.importer import load_file_module

    found: dict[str, tuple[str, type]] = {}
    for entry in imports:
        if entry.endswith(".py"):
            file = Path(entry).resolve()
            if not file.is_file():
                raise RecipeError(f"--imports {entry}: file not found")
            try:
                module = load_file_module(file)
            except Exception as exc:
                raise RecipeError(f"--imports {entry}: {type(exc).__name__}: {exc}") from None
        else:
            try:
                module = importlib.import_module(entry)
            except ImportError as exc:
                raise RecipeError(f"--imports {entry}: {exc}") from None
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                found.setdefault(keras.saving.get_registered_name(obj), (entry, obj))
                found.setdefault(obj.__name__, (entry, obj))
    return found


class _Converter:
    def __init__(self, custom: dict[str, tuple[str, type]] | None = None) -> None:
        self.custom = custom or {}  # classes of the modules given with --imports
        self.submodels: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.imports: set[str] = set()  # Keras-internal modules whose layer classes the recipe uses

    def err(self, message: str) -> RecipeError:
        return RecipeError(message)

    def check_name(self, name: str, what: str) -> str:
        if not _NAME_RE.match(name) or len(name) > 128:
            raise self.err(f"{what} {name!r} is not a valid recipe name (letters, digits, _ . -); rename it in Keras")
        return name

    def inputs_of(self, layer_config: dict[str, Any]) -> dict[str, Any]:
        config = layer_config["config"]
        shape = config.get("batch_shape") or config.get("batch_input_shape")
        if shape is None:
            raise self.err(f"input {config.get('name')!r} has no shape")
        spec: dict[str, Any] = {"shape": list(shape[1:])}
        dtype = config.get("dtype")
        if isinstance(dtype, dict):
            dtype = (dtype.get("config") or {}).get("name")
        if dtype and dtype != "float32":
            spec["dtype"] = dtype
        if config.get("sparse"):
            spec["sparse"] = True
        if config.get("ragged"):
            raise self.err(f"input {config.get('name')!r} is ragged; recipes declare dense or sparse inputs")
        return spec

    def layer_node(self, layer_config: dict[str, Any], *, nested_ok: bool) -> tuple[str, dict[str, Any]]:
        """(type, kwargs) for one layer config; nested models become sub-models."""
        import keras

        class_name = layer_config["class_name"]
        name = layer_config["config"].get("name") or layer_config.get("name")
        if class_name in MODEL_CLASSES or "layers" in (layer_config.get("config") or {}):
            sub_name = self.check_name(str(name), "sub-model")
            if catalog.entry("layers", sub_name) is not None:
                raise self.err(f"sub-model {sub_name!r} is named like a Keras layer class; rename it in Keras")
            if sub_name not in self.submodels:
                self.submodels[sub_name] = {}  # taken before its own sub-models, which it calls
                self.submodels[sub_name] = self.graph(layer_config["config"], class_name, nested_ok=True)
            return sub_name, {}
        module = str(layer_config.get("module") or "")
        known = self.custom.get(layer_config.get("registered_name") or class_name)
        if known is not None and not module.startswith("keras"):
            entry, cls = known
            self.imports.add(entry)
            kwargs = minimal_kwargs(cls, layer_config["config"], {}, drop=("name",))
            return f"{entry}:{cls.__name__}", self.nested_specs(kwargs)
        if module.startswith(OPS_MODULE):
            return self.op_node(layer_config, str(name))
        if module.startswith("keras.src.") and not module.startswith("keras.src.layers"):
            return self.custom_node(layer_config, str(name))
        if catalog.entry("layers", class_name) is None or not module.startswith("keras"):
            what = layer_config.get("registered_name") or class_name
            raise self.err(
                f"layer {name!r} is a {what}, not a keras.layers class; a recipe can use it as "
                "`type: module:Class` with the module under `imports:`; name its module with `dlrun import --imports`"
            )
        if class_name == "Lambda":
            raise self.err(f"layer {name!r} is a Lambda (arbitrary code); write it as a custom layer class")
        cls = getattr(keras.layers, class_name)
        kwargs = minimal_kwargs(cls, layer_config["config"], _layer_defaults(class_name), drop=("name",))
        for key, value in kwargs.items():
            if _is_tensor(value):
                raise self.err(f"layer {name!r} holds a tensor in argument {key!r}; recipes cannot express that")
        return class_name, self.nested_specs(kwargs)

    def nested_specs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Layers held as arguments (`Bidirectional.layer`, `RNN.cell`, ...) as nested `{type: ...}` specs."""
        out = {}
        for key, value in kwargs.items():
            if nested.section_for(key) == "layers":
                value = self.nested_layer(value)
            out[key] = value
        return out

    def nested_layer(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.nested_layer(v) for v in value]
        if not (isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), dict)):
            return value
        type_, kwargs = self.layer_node({**value, "name": None}, nested_ok=False)
        entry = catalog.entry("layers", type_)
        if entry is not None:  # settings the wrapper makes itself (Bidirectional's zero_output_for_mask)
            known = set(entry["params"]) | set(catalog.BASE_LAYER_KWARGS)
            kwargs = {k: v for k, v in kwargs.items() if k in known}
        return {"type": type_, **kwargs}

    def custom_node(self, layer_config: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
        """A layer class defined inside Keras' own modules (ConvNeXt's LayerScale): `module:Class`, with the
        module listed under the recipe's `imports:`."""
        import importlib

        module = str(layer_config.get("module") or "")
        class_name = layer_config["class_name"]
        cls = getattr(importlib.import_module(module), class_name, None) if module.startswith("keras.") else None
        if cls is None:
            what = layer_config.get("registered_name") or class_name
            raise self.err(
                f"layer {name!r} is a {what}, not a keras.layers class; a recipe can use it as "
                "`type: module:Class` with the module under `imports:`; name its module with `dlrun import --imports`"
            )
        self.imports.add(module)
        kwargs = minimal_kwargs(cls, layer_config["config"], {}, drop=("name",))
        return f"{module}:{class_name}", self.nested_specs(kwargs)

    def op_node(self, layer_config: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
        """A keras.ops operation in the graph (`x + 3.0` is `keras.src.ops.numpy.Add`): `ops.<function>`."""
        op = snake_case(layer_config["class_name"])
        entry = catalog.entry("ops", op)
        if entry is None:
            raise self.err(f"operation {name!r} is a {layer_config['class_name']}, which has no keras.ops function")
        config = {k: v for k, v in (layer_config.get("config") or {}).items() if k != "name"}
        kwargs = {}
        for key, value in config.items():
            meta = entry["params"].get(key)
            if meta is None:
                raise self.err(f"operation {name!r} ({op}) has a setting {key!r} that ops.{op} does not take")
            if meta["required"] or _canon(meta["default"]) != _canon(value):
                kwargs[key] = value
        return f"ops.{op}", kwargs

    def graph(self, config: dict[str, Any], class_name: str, *, nested_ok: bool) -> dict[str, Any]:
        """A functional or Sequential config -> a recipe graph section (inputs, layers, outputs)."""
        layers = config.get("layers") or []
        if class_name == "Sequential":
            return self.sequential(config, layers, nested_ok=nested_ok)
        if "input_layers" not in config:
            raise self.err(f"model {config.get('name')!r} is not a functional or Sequential model")
        by_name = {layer["name"]: layer for layer in layers}
        inputs: dict[str, Any] = {}
        for layer, _node, _index in _ref_list(config["input_layers"]):
            if by_name[layer]["class_name"] != "InputLayer":
                raise self.err(f"model input {layer!r} is not an InputLayer")
            inputs[self.check_name(layer, "input")] = self.inputs_of(by_name[layer])
        calls: dict[tuple[str, int], _Call] = {}
        order: list[tuple[str, int]] = []
        for layer in layers:
            if layer["class_name"] == "InputLayer":
                continue
            is_op = str(layer.get("module") or "").startswith(OPS_MODULE)
            for index, inbound in enumerate(layer.get("inbound_nodes") or []):
                where = f"layer {layer['name']!r}"
                args = inbound.get("args") or []
                raw = {k: _tensors_in(v, where) for k, v in (inbound.get("kwargs") or {}).items()}
                if is_op:
                    call = self.op_call(layer, args, raw, where)
                    refs, multi = call.refs, len(call.refs) > 1
                    kwargs = call.call
                else:
                    if len(args) != 1:
                        raise self.err(
                            f"{where} is called with {len(args)} positional inputs; recipes pass one or a list"
                        )
                    first = args[0]
                    multi = isinstance(first, list)
                    refs = [_history(t, where) for t in (first if multi else [first])]
                    kwargs = _call_kwargs(layer["class_name"], raw)
                call = _Call(layer["name"], index, refs, multi, kwargs, op=is_op)
                every = refs + [m.ref for m in _markers(kwargs)]
                call.deps = [(r[0], r[1]) for r in every if r[0] not in inputs]
                calls[(layer["name"], index)] = call
                order.append((layer["name"], index))
        outputs_refs = _ref_list(config["output_layers"])
        return self.emit(inputs, by_name, calls, order, outputs_refs, nested_ok=nested_ok)

    def op_call(self, layer: dict[str, Any], args: list[Any], kwargs: dict[str, Any], where: str) -> _Call:
        """An op's inputs: the leading tensor arguments; the rest by the op function's argument names."""
        entry = catalog.entry("ops", snake_case(layer["class_name"]))
        order = entry["order"] if entry else []
        refs: list[tuple[str, int, int]] = []
        named: dict[str, Any] = {}
        for i, value in enumerate(args):
            value = _tensors_in(value, where)
            if isinstance(value, _Tensor) and not named:
                refs.append(value.ref)
            elif i < len(order):
                named[order[i]] = value
            else:
                raise self.err(
                    f"{where} is called with more arguments than ops.{snake_case(layer['class_name'])} takes"
                )
        named.update(kwargs)
        return _Call(layer["name"], 0, refs, len(refs) > 1, named, op=True)

    def sequential(self, config: dict[str, Any], layers: list[dict[str, Any]], *, nested_ok: bool) -> dict[str, Any]:
        if layers and layers[0]["class_name"] == "InputLayer":
            first, rest = layers[0], layers[1:]
            input_name = first["config"].get("name") or "input"
            inputs = {self.check_name(input_name, "input"): self.inputs_of(first)}
        else:
            shape = config.get("build_input_shape")
            if not shape:
                raise self.err("the Sequential model was never built: its input shape is unknown")
            input_name, rest = "input", layers
            inputs = {"input": {"shape": list(shape[1:])}}
        if not rest:
            raise self.err("the Sequential model has no layers")
        by_name: dict[str, Any] = {}
        calls: dict[tuple[str, int], _Call] = {}
        order: list[tuple[str, int]] = []
        previous: tuple[str, int, int] = (input_name, 0, 0)
        for layer in rest:
            name = layer["config"].get("name")
            entry = {**layer, "name": name}
            by_name[name] = entry
            call = _Call(name, 0, [previous], False, {})
            call.deps = [] if previous[0] == input_name else [(previous[0], 0)]
            calls[(name, 0)] = call
            order.append((name, 0))
            previous = (name, 0, 0)
        return self.emit(inputs, by_name, calls, order, [previous], nested_ok=nested_ok)

    def emit(
        self,
        inputs: dict[str, Any],
        by_name: dict[str, dict[str, Any]],
        calls: dict[tuple[str, int], _Call],
        order: list[tuple[str, int]],
        output_refs: list[tuple[str, int, int]],
        *,
        nested_ok: bool,
    ) -> dict[str, Any]:
        # Topological order that keeps the config's order wherever the graph allows.
        done: set[tuple[str, int]] = set()
        sorted_calls: list[_Call] = []

        def visit(key: tuple[str, int], trail: tuple[tuple[str, int], ...] = ()) -> None:
            if key in done:
                return
            if key in trail:
                raise self.err(f"the model graph has a cycle through {key[0]!r}")
            for dep in calls[key].deps:
                visit(dep, (*trail, key))
            done.add(key)
            sorted_calls.append(calls[key])

        for key in order:
            visit(key)
        taken = set(inputs) | {c.layer for c in sorted_calls if c.index == 0}
        node_names: dict[tuple[str, int], str] = {}
        for c in sorted_calls:
            if c.index == 0:
                node_names[(c.layer, 0)] = self.check_name(c.layer, "layer")
            else:
                k, name = c.index, f"{c.layer}_{c.index}"
                while name in taken:
                    k += 1
                    name = f"{c.layer}_{k}"
                taken.add(name)
                node_names[(c.layer, c.index)] = name

        # Calls giving several tensors: every reference to them picks one (`lstm[0]`, `lstm[1]`).
        every = [r for c in sorted_calls for r in (*c.refs, *(m.ref for m in _markers(c.call)))] + output_refs
        multi = {(r[0], r[1]) for r in every if r[2] != 0}
        for c in sorted_calls:
            layer_config = by_name[c.layer].get("config") or {}
            if layer_config.get("return_state") is True or c.call.get("return_attention_scores") is True:
                multi.add((c.layer, c.index))

        def ref_name(ref: tuple[str, int, int]) -> str:
            if ref[0] in inputs:
                return ref[0]
            name = node_names[(ref[0], ref[1])]
            return f"{name}[{ref[2]}]" if (ref[0], ref[1]) in multi else name

        def named(value: Any) -> Any:
            if isinstance(value, _Tensor):
                return ref_name(value.ref)
            if isinstance(value, list):
                return [named(v) for v in value]
            if isinstance(value, dict):
                return {k: named(v) for k, v in value.items()}
            return value

        nodes: list[dict[str, Any]] = []
        types: dict[str, tuple[str, dict[str, Any]]] = {}
        previous = next(iter(inputs)) if len(inputs) == 1 else None
        for c in sorted_calls:
            name = node_names[(c.layer, c.index)]
            if c.layer not in types:
                types[c.layer] = self.layer_node(by_name[c.layer], nested_ok=nested_ok)
            type_, kwargs = types[c.layer]
            node: dict[str, Any] = {"name": name}
            if type_ in self.submodels:
                node["type"] = type_
            elif c.index == 0:
                node["type"] = type_
                node.update(kwargs)
            else:
                node["share"] = node_names[(c.layer, 0)]
            refs = [ref_name(r) for r in c.refs]
            if refs and (c.multi or refs != [previous]):
                node["inputs"] = refs if c.multi or len(refs) > 1 else refs[0]
            if c.op:
                node.update(named(c.call))
            elif c.call:
                node["call"] = named(c.call)
            nodes.append(node)
            previous = name
        outputs = [ref_name(r) for r in output_refs]
        graph: dict[str, Any] = {"inputs": inputs, "layers": nodes}
        if outputs != [nodes[-1]["name"]]:
            graph["outputs"] = outputs
        return graph


# ----------------------------------------------------------------------------------------------------
# compile


def _component(section: str, value: Any) -> Any:
    """A serialized Keras object (or string) -> a recipe component: `name` or `{type: X, ...}`."""
    import keras

    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        raise RecipeError(f"cannot read the compiled {section[:-1]} {str(value)[:60]}")
    class_name = value["class_name"]
    module = {"schedules": keras.optimizers.schedules}.get(section) or getattr(keras, section)
    entry = catalog.entry(section, class_name)
    cls = getattr(module, class_name, None)
    if entry is None or cls is None or not str(value.get("module") or "keras").startswith("keras"):
        raise RecipeError(
            f"the model was compiled with {value.get('registered_name') or class_name}, not a keras.{section} class"
        )
    config = dict(value.get("config") or {})
    defaults = {k: p["default"] for k, p in entry["params"].items() if not p["required"]}
    schedule = config.get("learning_rate") if section == "optimizers" else None
    if isinstance(schedule, dict) and "class_name" in schedule:
        config.pop("learning_rate")
    kwargs = minimal_kwargs(cls, config, defaults, drop=(), ignore=("name",))
    bare = re.sub(r"_\d+$", "", str(kwargs.get("name"))).replace("_", "")
    automatic = bare in (class_name.lower(), str(defaults.get("name")).replace("_", ""))
    if "name" in kwargs and (section == "optimizers" or automatic):
        del kwargs["name"]
    if kwargs.get("dtype") in ("float32", None) and "dtype" in kwargs and defaults.get("dtype") is None:
        del kwargs["dtype"]
    if isinstance(schedule, dict) and "class_name" in schedule:
        kwargs["learning_rate"] = _component("schedules", schedule)
        if isinstance(kwargs["learning_rate"], str):
            kwargs["learning_rate"] = {"type": kwargs["learning_rate"]}
    if kwargs:
        return {"type": class_name, **kwargs}
    alias = next((a for a, c in catalog.aliases(section).items() if c == class_name), None)
    return alias or class_name


def _per_output(value: Any, outputs: list[str]) -> Any:
    """A list given per output (by position) -> a mapping by output name."""
    if isinstance(value, list) and len(value) == len(outputs) and len(outputs) > 1:
        return dict(zip(outputs, value, strict=True))
    return value


def _compile_section(compile_config: dict[str, Any] | None, outputs: list[str], activations: dict[str, Any]) -> tuple:
    """(compile section, True when it is a placeholder)."""
    if not compile_config or compile_config.get("loss") is None:

        def guess(out: str) -> str:
            act = activations.get(out)
            if act == "softmax":
                return "categorical_crossentropy"
            if act == "sigmoid":
                return "binary_crossentropy"
            return "mse"

        losses = {o: guess(o) for o in outputs}
        loss: Any = losses[outputs[0]] if len(set(losses.values())) == 1 else losses
        return {"optimizer": "adam", "loss": loss}, True
    section: dict[str, Any] = {"optimizer": _component("optimizers", compile_config.get("optimizer") or "rmsprop")}
    loss = _per_output(compile_config["loss"], outputs)
    if isinstance(loss, dict) and "class_name" not in loss:
        section["loss"] = {k: _component("losses", v) for k, v in loss.items()}
    elif isinstance(loss, list):
        section["loss"] = _component("losses", loss[0])
    else:
        section["loss"] = _component("losses", loss)
    weights = _per_output(compile_config.get("loss_weights"), outputs)
    if isinstance(weights, dict):
        section["loss_weights"] = {k: float(v) for k, v in weights.items()}
    metrics = _per_output(compile_config.get("metrics"), outputs)
    if isinstance(metrics, dict):
        section["metrics"] = {
            k: [_component("metrics", m) for m in (v if isinstance(v, list) else [v]) if m is not None]
            for k, v in metrics.items()
            if v
        }
    elif metrics:
        section["metrics"] = [_component("metrics", m) for m in metrics if m is not None]
    steps = compile_config.get("steps_per_execution")
    if isinstance(steps, int) and steps > 1:
        section["steps_per_execution"] = steps
    return section, False


# ----------------------------------------------------------------------------------------------------
# the recipe


def load_keras_model(path: Path) -> keras.Model:
    """Load a saved model with `safe_mode=True` (compiled when possible); user errors as RecipeError."""
    from dlrun.backend import load_model

    if not path.is_file():
        raise RecipeError(f"model file not found: {path}")
    try:
        with warnings.catch_warnings():  # "Skipping variable loading for optimizer ...": not ours to show
            warnings.simplefilter("ignore")
            return load_model(path, safe_mode=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "safe_mode" in text or "Lambda" in text:
            raise RecipeError(
                f"{path.name} holds Python code (a Lambda layer or function); `dlrun import` loads with "
                "safe_mode and cannot express it"
            ) from None
        try:
            return load_model(path, safe_mode=True, compile=False)
        except Exception:
            raise RecipeError(f"cannot load {path.name} as a Keras model: {text[:300]}") from None


def recipe_from_model(
    model: keras.Model, *, name: str | None = None, fold: bool = True, custom: dict[str, tuple[str, type]] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The recipe document for a Keras model, and notes for the reader (placeholders, ...); with `fold`,
    repeated structure is written once under `blocks:` and used with `repeat:`. `custom` maps registered
    classes to their `imports:` entry (`load_custom_classes`)."""
    class_name = type(model).__name__
    if class_name not in ("Functional", "Sequential") and not hasattr(model, "_functional"):
        raise RecipeError(
            f"{class_name} is a subclassed model: its graph is Python code; only functional and Sequential "
            "models can be imported"
        )
    converter = _Converter(custom)
    config = model.get_config()
    graph = converter.graph(config, "Sequential" if class_name == "Sequential" else "Functional", nested_ok=True)
    recipe_name = name or str(config.get("name") or model.name)
    if not _NAME_RE.match(recipe_name):
        recipe_name = re.sub(r"[^A-Za-z0-9_.\-]", "_", recipe_name).lstrip("0123456789.-") or "imported"
    model_section: dict[str, Any] = {"inputs": graph["inputs"]}
    if converter.submodels:
        model_section["submodels"] = {}
        for sub_name, sub in converter.submodels.items():
            model_section["submodels"][sub_name] = sub
            layer = _find_layer(model, sub_name)
            if layer is not None and not layer.trainable:
                sub["trainable"] = False  # freezes every layer inside: their own flags say nothing more
                for node in sub["layers"]:
                    if node.get("trainable") is False:
                        del node["trainable"]
    model_section["layers"] = graph["layers"]
    if "outputs" in graph:
        model_section["outputs"] = graph["outputs"]
    outputs = graph.get("outputs") or [graph["layers"][-1]["name"]]
    activations = {}
    for node in graph["layers"]:
        if node["name"] in outputs:
            activations[node["name"]] = node.get("activation")
    compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if compile_config is None and getattr(model, "_compile_config", None) is not None:
        compile_config = model._compile_config.config
    compile_section, placeholder = _compile_section(compile_config, outputs, activations)
    notes = []
    adapted = [
        f"{node['name']} ({node['type']})"
        for g in (graph, *converter.submodels.values())
        for node in g["layers"]
        if node.get("type") in ADAPTED_LAYERS
    ]
    if adapted:
        notes.append(
            f"{', '.join(adapted)}: statistics or vocabularies learned by adapt() are state, not arguments; "
            "declare such layers under data.inputs.<name>.preprocess to adapt them on the training split"
        )
    if placeholder:
        notes.append("the model was not compiled: `compile` holds a placeholder loss; set the real one")
    shapes = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    document: dict[str, Any] = {
        "name": recipe_name,
        **({"imports": sorted(converter.imports)} if converter.imports else {}),
        "model": model_section,
        "compile": compile_section,
        "expect": {
            "params": int(model.count_params()),
            "trainable_params": int(sum(int(_size(w)) for w in model.trainable_weights)),
            "output_shapes": {o: list(t.shape) for o, t in zip(outputs, shapes, strict=False)},
        },
    }
    if fold:
        from dlrun.graph.fold import fold_document

        document = fold_document(document)
    return document, notes


def _size(weight: keras.Variable) -> int:
    n = 1
    for d in weight.shape:
        n *= int(d)
    return n


def _find_layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    for layer in model.layers:
        if layer.name == name:
            return layer
    return None


def to_yaml(document: dict[str, Any], *, header: list[str] = ()) -> str:
    """Recipe text in the style of the seeds' recipes: one flow mapping per node."""

    def flow(value: Any) -> str:
        if not isinstance(value, dict | list):
            return yaml.safe_dump([value], default_flow_style=True, width=10**9).strip()[1:-1]
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9).strip()

    def block(mapping: dict[str, Any], indent: int) -> list[str]:
        lines = []
        for key, value in mapping.items():
            nested = isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values())
            if nested:
                lines += [f"{' ' * indent}{flow(key)}:", *block(value, indent + 2)]
            else:
                lines.append(f"{' ' * indent}{flow(key)}: {flow(value)}")
        return lines

    def graph_lines(graph: dict[str, Any], indent: int) -> list[str]:
        pad = " " * indent
        lines = [f"{pad}inputs:"]
        for input_name, spec in graph["inputs"].items():
            lines.append(f"{pad}  {flow({input_name: spec})[1:-1]}")
        if "trainable" in graph:
            lines.append(f"{pad}trainable: {flow(graph['trainable'])}")
        for key in ("submodels",):
            if key in graph:
                lines.append(f"{pad}submodels:")
                for sub_name, sub in graph[key].items():
                    lines.append(f"{pad}  {sub_name}:")
                    lines += graph_lines(sub, indent + 4)
        lines.append(f"{pad}layers:")
        lines += [f"{pad}  - {flow(node)}" for node in graph["layers"]]
        if "outputs" in graph:
            lines.append(f"{pad}outputs: {flow(graph['outputs'])}")
        return lines

    lines = [f"# {h}" for h in header]
    lines.append(f"name: {flow(document['name'])}")
    if "imports" in document:  # Keras' own modules: their layer classes run no code of the model file
        lines.append(f"imports: {flow(document['imports'])}")
    if "blocks" in document:
        lines += ["", "blocks:"]
        for block_name, spec in document["blocks"].items():
            lines.append(f"  {block_name}:")
            for key in ("params", "inputs"):
                if key in spec:
                    lines.append(f"    {key}: {flow(spec[key])}")
            lines += ["    layers:", *[f"      - {flow(node)}" for node in spec["layers"]]]
    lines += ["", "model:", *graph_lines(document["model"], 2)]
    for section in ("compile", "expect"):
        if section in document:
            lines += ["", f"{section}:", *block(document[section], 2)]
    return "\n".join(lines) + "\n"


def import_model(
    path: Path, *, name: str | None = None, fold: bool = True, imports: list[str] | tuple[str, ...] = ()
) -> tuple[dict[str, Any], str]:
    """(recipe document, recipe YAML text) for the model saved at `path`; `fold=False` writes every layer
    call as its own node instead of folding repeated structure into blocks; `imports` are modules (or `.py`
    files) whose registered classes the model uses: they are imported first and listed under `imports:`."""
    if not path.is_file():
        raise RecipeError(f"model file not found: {path}")
    import keras

    custom = load_custom_classes(list(imports))
    model = load_keras_model(path)
    document, notes = recipe_from_model(model, name=name, fold=fold, custom=custom)
    header = [
        f"Imported by `dlrun import {path.name}` from a Keras {type(model).__name__} model (Keras {keras.__version__}).",
        *[f"NOTE: {n}." for n in notes],
    ]
    return document, to_yaml(document, header=header)
