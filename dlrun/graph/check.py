"""Static graph checks (no TensorFlow): recipe model section -> resolved `Graph`.

Resolves each node's type (Keras layer, sub-model, block, pretrained application, custom import path),
expands blocks, fills in omitted names and inputs, validates layer arguments against the Keras catalog,
and rejects dangling references, duplicate names, cycles and losses/metrics that do not match outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dlrun.errors import RecipeError, format_path
from dlrun.graph import catalog, values
from dlrun.graph.expand import ExpandedNode, expand_nodes
from dlrun.recipe.load import Document, KeyPath
from dlrun.recipe.schema import CompileSpec, Component, GraphSpec, InputSpec, Recipe
from dlrun.trust import write_path_problem

NodeKind = Literal["layer", "share", "submodel", "application", "custom"]
APPLICATION_PREFIX = "applications."


@dataclass
class Node:
    """One resolved node: what to build, from which inputs, and where it was written."""

    name: str
    kind: NodeKind
    type: str
    kwargs: dict[str, Any]
    call: dict[str, Any]
    inputs: list[str]
    path: KeyPath
    block: tuple[str, ...] = ()
    share: str | None = None


@dataclass
class Graph:
    """A resolved functional graph in topological order."""

    name: str
    inputs: dict[str, InputSpec]
    nodes: list[Node]
    outputs: list[str]
    aliases: dict[str, str] = field(default_factory=dict)
    submodels: dict[str, Graph] = field(default_factory=dict)
    trainable: bool = True

    def node(self, name: str) -> Node:
        """The node called `name` (after following block aliases)."""
        name = self.aliases.get(name, name)
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def resolve(self, ref: str) -> str:
        """Follow block aliases to the node or input that produces `ref`."""
        return self.aliases.get(ref, ref)


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


def _error(doc: Document | None, message: str, path: KeyPath, *, key: bool = False) -> RecipeError:
    if doc is None:
        return RecipeError(message, path=path)
    return doc.error(message, path, key=key)


class _Resolver:
    def __init__(self, recipe: Recipe, doc: Document | None) -> None:
        self.recipe = recipe
        self.doc = doc

    def err(self, message: str, path: KeyPath, *, key: bool = False) -> RecipeError:
        return _error(self.doc, message, path, key=key)

    def known_types(self) -> list[str]:
        return [*catalog.names("layers"), *self.recipe.model.submodels, *self.recipe.blocks]

    def classify(self, node: ExpandedNode) -> tuple[NodeKind, str]:
        t = node.type
        assert t is not None
        if t in self.recipe.model.submodels:
            return "submodel", t
        if ":" in t:
            return "custom", t
        if t.startswith(APPLICATION_PREFIX):
            app = t[len(APPLICATION_PREFIX) :]
            if catalog.entry("applications", app) is None:
                hint = catalog.did_you_mean(app, catalog.names("applications"))
                raise self.err(f"unknown keras.applications model {app!r}{hint}", (*node.path, "type"))
            return "application", app
        if catalog.entry("layers", t) is not None:
            return "layer", t
        if catalog.entry("applications", t) is not None:
            raise self.err(f"{t!r} is a pretrained model: write `type: applications.{t}`", (*node.path, "type"))
        hint = catalog.did_you_mean(t, self.known_types())
        raise self.err(
            f"unknown layer type {t!r}{hint}; use a keras.layers class name, a block, a sub-model, "
            "`applications.<Model>` or an import path `module:Class`",
            (*node.path, "type"),
        )

    def graph(self, name: str, spec: GraphSpec, base: KeyPath, *, trainable: bool = True) -> Graph:
        expanded, aliases = expand_nodes(
            spec.layers, self.recipe.blocks, (*base, "layers"), self.doc, list(spec.inputs)
        )
        taken: dict[str, KeyPath] = {n: (*base, "inputs", n) for n in spec.inputs}
        nodes: list[Node] = []
        for n in expanded:
            kind, type_ = ("share", n.share or "") if n.share is not None else self.classify(n)
            if n.name in taken or n.name in aliases:
                first = str(self.doc.locate(taken.get(n.name, n.path))) if self.doc else ""
                if n.name in spec.inputs:
                    where = f" (at {first})" if first else ""
                    raise self.err(f"node name {n.name!r} is already a model input{where}", (*n.path, "name"))
                where = f" (first at {first})" if first else ""
                raise self.err(f"duplicate name {n.name!r}{where}", (*n.path, "name"))
            taken[n.name] = n.path
            if n.inputs is None:
                raise self.err(
                    f"node {n.name!r} has no `inputs` and there is no single previous node to take; "
                    f"name its inputs (model inputs: {', '.join(spec.inputs)})",
                    n.path,
                )
            if not n.inputs:
                raise self.err("`inputs` is empty", (*n.path, "inputs"))
            nodes.append(
                Node(
                    name=n.name,
                    kind=kind,
                    type=type_,
                    kwargs=n.kwargs,
                    call=n.call,
                    inputs=list(n.inputs),
                    path=n.path,
                    block=n.block,
                    share=n.share,
                )
            )
        if not nodes:
            raise self.err("the graph has no nodes", (*base, "layers"))
        last = expanded[-1].name if expanded else None
        # The last top-level entry may be a block use; its name stands for the block's output.
        top_last = spec.layers[-1].name
        if top_last and top_last in aliases:
            last = top_last
        outputs = list(spec.outputs) if spec.outputs else [last or nodes[-1].name]
        graph = Graph(
            name=name,
            inputs=dict(spec.inputs),
            nodes=nodes,
            outputs=outputs,
            aliases=aliases,
            trainable=trainable,
        )
        self.check_references(graph, base)
        graph.nodes = self.topological(graph, base)
        self.check_nodes(graph)
        return graph

    def check_references(self, graph: Graph, base: KeyPath) -> None:
        names = set(graph.inputs) | {n.name for n in graph.nodes} | set(graph.aliases)
        by_name = {n.name: n for n in graph.nodes}
        for n in graph.nodes:
            for i, ref in enumerate(n.inputs):
                if ref not in names:
                    hint = catalog.did_you_mean(ref, sorted(names))
                    raise self.err(f"input {ref!r} of node {n.name!r} is not defined{hint}", (*n.path, "inputs", i))
                if graph.resolve(ref) == n.name:
                    raise self.err(f"node {n.name!r} takes its own output as input", (*n.path, "inputs", i))
            if n.kind == "share":
                target = by_name.get(graph.resolve(n.share or ""))
                if target is None:
                    hint = catalog.did_you_mean(n.share or "", sorted(by_name))
                    raise self.err(f"`share` names {n.share!r}, which is not a node{hint}", (*n.path, "share"))
                if target.kind == "share":
                    n.share = target.share
                    target = by_name[graph.resolve(target.share or "")]
                n.type = target.type
        for i, out in enumerate(graph.outputs):
            if out not in names:
                hint = catalog.did_you_mean(out, sorted(names))
                raise self.err(f"output {out!r} is not a node{hint}", (*base, "outputs", i))
        if len(set(graph.outputs)) != len(graph.outputs):
            raise self.err("an output is listed twice", (*base, "outputs"))

    def topological(self, graph: Graph, base: KeyPath) -> list[Node]:
        by_name = {n.name: n for n in graph.nodes}
        order: list[Node] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def deps(n: Node) -> list[str]:
            refs = [graph.resolve(r) for r in n.inputs]
            if n.kind == "share" and n.share:
                refs.append(graph.resolve(n.share))
            return [r for r in refs if r in by_name]

        for start in graph.nodes:
            if state.get(start.name) == 2:
                continue
            stack: list[tuple[Node, int]] = [(start, 0)]
            trail: list[str] = []
            while stack:
                n, i = stack.pop()
                if i == 0:
                    if state.get(n.name) == 2:
                        continue
                    state[n.name] = 1
                    trail.append(n.name)
                children = deps(n)
                if i < len(children):
                    stack.append((n, i + 1))
                    child = by_name[children[i]]
                    if state.get(child.name) == 1:
                        cycle = [*trail[trail.index(child.name) :], child.name]
                        raise self.err(f"the graph has a cycle: {' -> '.join(reversed(cycle))}", (*n.path, "inputs"))
                    if state.get(child.name) != 2:
                        stack.append((child, 0))
                else:
                    state[n.name] = 2
                    trail.pop()
                    order.append(n)
        return order

    def check_nodes(self, graph: Graph) -> None:
        for n in graph.nodes:
            if n.kind == "layer":
                spec = catalog.entry("layers", n.type)
                assert spec is not None
                if spec["params"] and n.type == "InputLayer":
                    raise self.err("declare inputs under `model.inputs`, not as an InputLayer node", n.path)
                check_arguments(self.doc, n.type, spec, n.kwargs, n.path, layer=True)
            elif n.kind == "application":
                spec = catalog.entry("applications", n.type)
                assert spec is not None
                app_kwargs = {k: v for k, v in n.kwargs.items() if k != "trainable"}
                check_arguments(self.doc, f"applications.{n.type}", spec, app_kwargs, n.path, layer=False)
                for bad in ("input_tensor", "name"):
                    if bad in n.kwargs:
                        raise self.err(f"{bad!r} is set by dlrun for applications nodes", (*n.path, bad), key=True)
            elif n.kind == "submodel" and n.kwargs:
                key = next(iter(n.kwargs))
                raise self.err(f"sub-model node {n.name!r} takes no arguments (got {key!r})", (*n.path, key), key=True)


_SINGULAR = {"optimizers": "optimizer", "losses": "loss", "metrics": "metric", "callbacks": "callback"}


def _check_component(
    doc: Document | None, section: str, comp: Component, path: KeyPath, *, allow_alias: bool = True
) -> None:
    if ":" in comp.type:
        return  # custom import path: checked when imported
    aliases = catalog.aliases(section)
    name = aliases.get(comp.type, comp.type) if allow_alias else comp.type
    spec = catalog.entry(section, name)
    if (
        spec is None
        and section == "metrics"
        and name in ("accuracy", "acc", "mse", "mae", "mape", "msle", "crossentropy")
    ):
        return
    if spec is None and section == "losses" and name in catalog.aliases("losses").values():
        return
    if spec is None:
        pool = [*catalog.names(section), *aliases]
        hint = catalog.did_you_mean(comp.type, pool)
        what = _SINGULAR.get(section, section)
        raise _error(doc, f"unknown {what} {comp.type!r}{hint}", (*path, "type") if comp.kwargs else path)
    kwargs = comp.kwargs
    if spec["kind"] == "function":
        if kwargs:
            raise _error(doc, f"{comp.type!r} is a function and takes no arguments; use its class form", path)
        return
    lr = kwargs.get("learning_rate")
    if section == "optimizers" and isinstance(lr, dict):
        if not isinstance(lr.get("type"), str) or not lr["type"]:
            raise _error(doc, "a learning-rate schedule needs `type` (e.g. ExponentialDecay)", (*path, "learning_rate"))
        sched = Component.model_validate(lr)
        sched_spec = catalog.entry("schedules", sched.type)
        if sched_spec is None:
            hint = catalog.did_you_mean(sched.type, catalog.names("schedules"))
            raise _error(doc, f"unknown learning-rate schedule {sched.type!r}{hint}", (*path, "learning_rate", "type"))
        check_arguments(doc, sched.type, sched_spec, sched.kwargs, (*path, "learning_rate"), layer=False)
        kwargs = {k: v for k, v in kwargs.items() if k != "learning_rate"}
    # dlrun places these files inside the run folder when they are not given.
    defaulted = ("filepath", "filename", "backup_dir") if section == "callbacks" else ()
    check_arguments(doc, name, spec, kwargs, path, layer=False, skip=defaulted)


def check_compile(doc: Document | None, spec: CompileSpec, outputs: list[str], base: KeyPath = ("compile",)) -> None:
    """Optimizer, losses, loss weights and metrics: known to Keras and matching the model's outputs."""
    _check_component(doc, "optimizers", spec.optimizer, (*base, "optimizer"))
    if isinstance(spec.loss, dict):
        for out, comp in spec.loss.items():
            if out not in outputs:
                hint = catalog.did_you_mean(out, outputs)
                raise _error(
                    doc,
                    f"loss for unknown output {out!r}{hint}; outputs: {', '.join(outputs)}",
                    (*base, "loss", out),
                    key=True,
                )
            _check_component(doc, "losses", comp, (*base, "loss", out))
        missing = [o for o in outputs if o not in spec.loss]
        if missing:
            raise _error(
                doc,
                f"output {missing[0]!r} has no loss; add `{missing[0]}: <loss>` under compile.loss",
                (*base, "loss"),
            )
    else:
        _check_component(doc, "losses", spec.loss, (*base, "loss"))
    for key in spec.loss_weights or {}:
        if key not in outputs:
            hint = catalog.did_you_mean(key, outputs)
            raise _error(doc, f"loss weight for unknown output {key!r}{hint}", (*base, "loss_weights", key), key=True)
    if isinstance(spec.metrics, dict):
        for out, comps in spec.metrics.items():
            if out not in outputs:
                hint = catalog.did_you_mean(out, outputs)
                raise _error(doc, f"metrics for unknown output {out!r}{hint}", (*base, "metrics", out), key=True)
            for i, comp in enumerate(comps):
                _check_component(doc, "metrics", comp, (*base, "metrics", out, i))
    else:
        for i, comp in enumerate(spec.metrics):
            _check_component(doc, "metrics", comp, (*base, "metrics", i))


def check_callbacks(doc: Document | None, callbacks: list[Component], base: KeyPath) -> None:
    """Each callback is a Keras callback class (or import path) with valid arguments."""
    for i, comp in enumerate(callbacks):
        _check_component(doc, "callbacks", comp, (*base, i), allow_alias=False)
        if problem := write_path_problem(comp.type, comp.kwargs):  # writes stay in the run folder
            raise _error(doc, problem[1], (*base, i, problem[0]))


def resolve_graph(recipe: Recipe, doc: Document | None = None) -> Graph:
    """Resolve and check the recipe's model (and its sub-models) into a `Graph`."""
    resolver = _Resolver(recipe, doc)
    subgraphs: dict[str, Graph] = {}
    for sub_name, sub in recipe.model.submodels.items():
        if sub_name in catalog.load_catalog()["layers"]:
            raise _error(
                doc,
                f"sub-model name {sub_name!r} hides the Keras layer of that name; rename it",
                ("model", "submodels", sub_name),
                key=True,
            )
        subgraphs[sub_name] = resolver.graph(sub_name, sub, ("model", "submodels", sub_name), trainable=sub.trainable)
        for n in subgraphs[sub_name].nodes:
            if n.kind == "submodel":
                raise _error(doc, "sub-models cannot call other sub-models; use a block", (*n.path, "type"))
    for block_name in recipe.blocks:
        if block_name in recipe.model.submodels or catalog.entry("layers", block_name):
            raise _error(
                doc,
                f"block name {block_name!r} is already a sub-model or Keras layer; rename it",
                ("blocks", block_name),
                key=True,
            )
    graph = resolver.graph(recipe.model.name or recipe.name, recipe.model, ("model",))
    graph.submodels = subgraphs
    check_compile(doc, recipe.compile, graph.outputs)
    check_callbacks(doc, recipe.train.callbacks, ("train", "callbacks"))
    for i, stage in enumerate(recipe.train.stages):
        if stage.optimizer is not None:
            _check_component(doc, "optimizers", stage.optimizer, ("train", "stages", i, "optimizer"))
        check_callbacks(doc, stage.callbacks or [], ("train", "stages", i, "callbacks"))
        for key in stage.loss_weights or {}:
            if key not in graph.outputs:
                raise _error(
                    doc,
                    f"loss weight for unknown output {key!r}",
                    ("train", "stages", i, "loss_weights", key),
                    key=True,
                )
    _check_data(doc, recipe, graph)
    return graph


def _check_data(doc: Document | None, recipe: Recipe, graph: Graph) -> None:
    if recipe.data is None:
        return
    for name in recipe.data.inputs:
        if name not in graph.inputs:
            hint = catalog.did_you_mean(name, list(graph.inputs))
            raise _error(doc, f"data input {name!r} is not a model input{hint}", ("data", "inputs", name), key=True)
    for name in graph.inputs:
        if name not in recipe.data.inputs:
            raise _error(doc, f"model input {name!r} gets no data; add it under data.inputs", ("data", "inputs"))
    for name in recipe.data.targets:
        if name not in graph.outputs:
            hint = catalog.did_you_mean(name, graph.outputs)
            raise _error(doc, f"data target {name!r} is not a model output{hint}", ("data", "targets", name), key=True)
    for name in graph.outputs:
        if name not in recipe.data.targets:
            raise _error(doc, f"model output {name!r} has no target; add it under data.targets", ("data", "targets"))
