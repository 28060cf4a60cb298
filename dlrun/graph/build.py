"""Resolved `Graph` -> `keras.Model` with the functional API.

Layers are found by their Keras class name (`getattr(keras.layers, type)`), so every Keras layer works
with no per-layer code. Shared nodes call the very same layer object; sub-models are built once as
`keras.Model`s and called like layers; `applications.X` nodes wrap a `keras.applications` model.
Errors while calling a layer name the node, its inputs and their shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import RecipeError
from dlrun.graph import nested, refs
from dlrun.graph.check import Graph, Node, layer_name
from dlrun.importer import Importer
from dlrun.recipe.load import Document

if TYPE_CHECKING:
    import keras


def _shape(t: Any) -> str:
    shape = getattr(t, "shape", None)
    return str(tuple(shape)) if shape is not None else type(t).__name__


def _first_line(exc: BaseException) -> str:
    # Keras wraps call errors: "Exception encountered when calling X.call().\n\n\x1b[1m<the reason>\x1b[0m ..."
    text = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    if len(text) > 1 and text[0].startswith("Exception encountered when calling"):
        text = text[1:]
    return text[0].strip() if text else type(exc).__name__


class _Builder:
    def __init__(self, importer: Importer, doc: Document | None, base_dir: Path) -> None:
        self.importer = importer
        self.doc = doc
        self.base_dir = base_dir
        self.tensors: dict[str, Any] = {}
        self.layers: dict[str, keras.layers.Layer | Callable[..., Any]] = {}
        self.subgraphs: dict[str, Graph] = {}

    def err(self, message: str, node: Node, *extra: str | int) -> RecipeError:
        path = (*node.path, *extra)
        if self.doc is None:
            return RecipeError(message, path=path)
        return self.doc.error(message, path)

    def located(self, exc: RecipeError) -> RecipeError:
        """A build error about a recipe key, with the key's file:line:column."""
        if exc.location is None and exc.path and self.doc is not None:
            return self.doc.error(exc.message, exc.path)
        return exc

    def kwargs(self, node: Node) -> dict[str, Any]:
        """The node's arguments with nested `{type: ...}` specs built into Keras objects."""
        try:
            return nested.build_kwargs(node.kwargs, self.importer, node.path)
        except RecipeError as exc:
            raise self.located(exc) from None

    def make_layer(self, node: Node, incoming: list[Any], submodels: dict[str, keras.Model]) -> keras.layers.Layer:
        import keras

        if node.kind == "layer":
            cls = getattr(keras.layers, node.type)
            kwargs = self.kwargs(node)
            try:
                return cls(name=layer_name(node.name), **kwargs)
            except Exception as exc:  # Keras validates its own arguments; report them as recipe errors
                raise self.err(f"{node.type}: {_first_line(exc)}", node) from None
        if node.kind == "submodel":
            return submodels[node.type]
        if node.kind == "custom":
            obj = self.importer.load(node.type, (*node.path, "type"))
            if not isinstance(obj, type):
                raise self.err(f"{node.type} is not a class", node, "type")
            kwargs = self.kwargs(node)
            try:
                return obj(name=layer_name(node.name), **kwargs)
            except Exception as exc:
                raise self.err(f"{node.type}: {_first_line(exc)}", node) from None
        if node.kind == "application":
            return self.make_application(node, incoming)
        raise AssertionError(node.kind)

    def make_application(self, node: Node, incoming: list[Any]) -> keras.Model:
        import keras

        kwargs = dict(node.kwargs)
        weights = kwargs.pop("weights", None)
        trainable = kwargs.pop("trainable", True)
        kwargs.setdefault("include_top", False)
        fn = getattr(keras.applications, node.type)
        local_file: Path | None = None
        if isinstance(weights, str) and weights != "imagenet":
            local_file = (self.base_dir / weights).resolve()
            if not local_file.is_file():
                raise self.err(f"weights file not found: {local_file}", node, "weights")
            weights = None
        try:
            model = fn(weights=weights, input_shape=tuple(incoming[0].shape[1:]), name=layer_name(node.name), **kwargs)
        except Exception as exc:
            text = _first_line(exc)
            if weights == "imagenet" and ("URL" in text or "fetch" in text.lower() or "resolve" in text.lower()):
                raise self.err(
                    f"cannot download imagenet weights for {node.type} (offline?); put the file in "
                    "~/.keras/models/ or give `weights: <local file>`",
                    node,
                    "weights",
                ) from None
            raise self.err(f"applications.{node.type}: {text}", node) from None
        if local_file is not None:
            try:
                model.load_weights(str(local_file))
            except Exception as exc:
                raise self.err(
                    f"cannot load weights from {local_file.name}: {_first_line(exc)}", node, "weights"
                ) from None
        model.trainable = bool(trainable)
        return model

    def build(self, graph: Graph, submodels: dict[str, keras.Model] | None = None) -> keras.Model:
        import keras

        submodels = submodels or {}
        tensors: dict[str, Any] = {}
        for name, spec in graph.inputs.items():
            tensors[name] = keras.Input(shape=tuple(spec.shape), dtype=spec.dtype, sparse=spec.sparse, name=name)
        layers: dict[str, keras.layers.Layer | Callable[..., Any]] = {}  # a keras.ops function for an op node

        def tensor(ref: str, node: Node | None, where: tuple[str | int, ...]) -> Any:
            """The tensor a reference names: a node's output, or one of its several outputs."""
            parsed = refs.parse(graph.resolve(ref))
            assert parsed is not None  # checked by resolve_graph
            value = tensors[parsed.base]
            if parsed.pick is None:
                return value
            pick = parsed.pick
            if isinstance(pick, str):
                producer = graph.node(parsed.base)
                pick = self.subgraphs[producer.type].outputs.index(pick)
            many = isinstance(value, list | tuple)
            if not many or pick >= len(value):
                count = len(value) if many else 1
                message = (
                    f"{ref!r}: output index {parsed.pick} is out of range; {parsed.base!r} gives {count} tensor(s)"
                )
                path = (*node.path, *where) if node is not None else ("model", *where)
                raise self.located(RecipeError(message, path=path))
            return value[pick]

        def arguments(node: Node) -> dict[str, Any]:
            """The call (or op) keyword arguments with their tensor references replaced by tensors."""
            root = () if node.kind == "op" else ("call",)
            out = {}
            for key, value in node.tensor_arguments().items():

                def one(text: str, key: str = key) -> Any:
                    return tensor(text, node, (*root, key)) if text in node.refs else None

                out[key] = refs.replace(value, one)
            return out

        for node in graph.nodes:
            incoming = [tensor(ref, node, ("inputs", i)) for i, ref in enumerate(node.inputs)]
            keyword = node.tensor_arguments()
            resolved = arguments(node)
            try:
                if node.kind == "op":
                    fn = getattr(keras.ops, node.type)
                    layers[node.name] = fn
                    tensors[node.name] = fn(*incoming, **resolved)
                    continue
                if node.kind == "share":
                    layer = layers[graph.resolve(node.share or "")]
                else:
                    layer = self.make_layer(node, incoming, submodels)
                layers[node.name] = layer
                if incoming:
                    arg = incoming[0] if len(incoming) == 1 else incoming
                    tensors[node.name] = layer(arg, **resolved)
                else:
                    tensors[node.name] = layer(**resolved)
            except RecipeError:
                raise
            except Exception as exc:
                shapes = ", ".join(f"{ref} {_shape(t)}" for ref, t in zip(node.inputs, incoming, strict=True))
                shapes += "".join(
                    f", {key}={text} {_shape(tensor(text, node, ()))}"
                    for key, value in keyword.items()
                    for text, _ in refs.strings(value, ())
                    if text in node.refs
                )
                what = f"ops.{node.type}" if node.kind == "op" else node.type
                raise self.err(
                    f"{what} {node.name!r} cannot take its input(s) {shapes.lstrip(', ')}: {_first_line(exc)}", node
                ) from None
        outputs = []
        for i, out in enumerate(graph.outputs):
            value = tensor(out, None, ("outputs", i))
            history = getattr(value, "_keras_history", None)
            produced_by = history.operation.name if history is not None else None
            parsed = refs.parse(graph.resolve(out))
            from_op = parsed is not None and parsed.base not in graph.inputs and graph.node(parsed.base).kind == "op"
            if produced_by != out or from_op or (parsed is not None and parsed.pick is not None):
                # Keras names outputs after the producing layer; keep the recipe's output name.
                value = keras.layers.Identity(name=out)(value)
            outputs.append(value)
        inputs = [tensors[n] for n in graph.inputs]
        model = keras.Model(
            inputs=inputs[0] if len(inputs) == 1 else inputs,
            outputs=outputs[0] if len(outputs) == 1 else outputs,
            name=graph.name,
        )
        model.trainable = graph.trainable
        self.tensors, self.layers = tensors, layers
        return model


@dataclass
class Built:
    """A built model plus, per node of the main graph, its output tensor and layer object."""

    model: keras.Model
    tensors: dict[str, Any]  # a KerasTensor, or a list of them for a node with several outputs
    layers: dict[str, keras.layers.Layer | Callable[..., Any]]  # a keras.ops function for an op node
    submodels: dict[str, keras.Model]


def build_traced(
    graph: Graph, importer: Importer, *, doc: Document | None = None, base_dir: Path | None = None
) -> Built:
    """Build the Keras model for `graph` (sub-models first, each built once), keeping per-node tensors."""
    builder = _Builder(importer, doc, base_dir or Path.cwd())
    builder.subgraphs = graph.submodels
    submodels: dict[str, keras.Model] = {}
    for name, sub in graph.submodels.items():  # in dependency order: a sub-model after those it calls
        submodels[name] = builder.build(sub, submodels)
    model = builder.build(graph, submodels)
    return Built(model=model, tensors=builder.tensors, layers=builder.layers, submodels=submodels)


def build_graph(
    graph: Graph, importer: Importer, *, doc: Document | None = None, base_dir: Path | None = None
) -> keras.Model:
    """Build the Keras model for `graph`."""
    return build_traced(graph, importer, doc=doc, base_dir=base_dir).model
