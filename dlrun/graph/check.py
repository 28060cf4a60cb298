"""Static graph checks (no TensorFlow): recipe model section -> resolved `Graph`.

Resolves each node's type (Keras layer, sub-model, block, pretrained application, custom import path),
expands blocks, fills in omitted names and inputs, validates layer arguments against the Keras catalog,
and rejects dangling references, duplicate names, cycles and losses/metrics that do not match outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dlrun.errors import RecipeError
from dlrun.graph import catalog, nested, refs
from dlrun.graph.expand import ExpandedNode, expand_nodes
from dlrun.graph.nested import check_arguments
from dlrun.recipe.load import Document, KeyPath
from dlrun.recipe.schema import CompileSpec, Component, GraphSpec, InputSpec, Recipe
from dlrun.trust import write_path_problem

NodeKind = Literal["layer", "share", "submodel", "application", "custom", "op"]
APPLICATION_PREFIX = "applications."
OPS_PREFIX = "ops."
# Every layer's `__call__` takes these, whether or not its `call()` names them.
_ANY_CALL = ("training", "mask")
# Recurrent layers and cells: how many state tensors `return_state` adds.
_STATES = {"LSTM": 2, "GRU": 1, "SimpleRNN": 1, "ConvLSTM1D": 2, "ConvLSTM2D": 2, "ConvLSTM3D": 2}
_CELL_STATES = {"LSTMCell": 2, "GRUCell": 1, "SimpleRNNCell": 1}


def layer_name(node: str) -> str:
    """The Keras name of a node's layer: the node's name with the dots of block copies (`stage.1.conv1`) as
    dashes (`stage-1-conv1`), since Keras' torch backend keys variables in a torch ParameterDict, which refuses
    dots. Recipes, summaries and model outputs keep the dotted names."""
    return node.replace(".", "-")


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
    refs: list[str] = field(default_factory=list)  # every tensor it takes: inputs, call and op arguments
    outputs: int | None = 1  # how many tensors it gives, when known without building

    def tensor_arguments(self) -> dict[str, Any]:
        """The keyword arguments whose strings are tensor references: `call` (layers) or the op's arguments."""
        return self.kwargs if self.kind == "op" else self.call


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
        """Follow block aliases to the node or input that produces `ref` (an output pick `[k]` is kept)."""
        if ref in self.aliases:
            return self.aliases[ref]
        return refs.rename(ref, lambda b: self.aliases.get(b, b))


def _error(doc: Document | None, message: str, path: KeyPath, *, key: bool = False) -> RecipeError:
    if doc is None:
        return RecipeError(message, path=path)
    return doc.error(message, path, key=key)


def _count_states(spec_type: str, kwargs: dict[str, Any]) -> int | None:
    """State tensors of a recurrent layer (or RNN over cells), None when not known statically."""
    if spec_type in _STATES:
        return _STATES[spec_type]
    if spec_type == "RNN":
        cells = kwargs.get("cell")
        cells = cells if isinstance(cells, list) else [cells]
        total = 0
        for cell in cells:
            if not nested.is_spec(cell):
                return None
            if cell["type"] == "StackedRNNCells":
                inner = _count_states("RNN", {"cell": cell.get("cells")})
                if inner is None:
                    return None
                total += inner
            elif cell["type"] in _CELL_STATES:
                total += _CELL_STATES[cell["type"]]
            else:
                return None
        return total
    return None


def output_count(kind: NodeKind, type_: str, kwargs: dict[str, Any], call: dict[str, Any]) -> int | None:
    """How many tensors a layer node gives (several with `return_state` / `return_attention_scores`), or
    None when only building can tell (ops, custom layers, wrappers over unknown layers)."""
    if kind == "application":
        return 1
    if kind in ("custom", "op"):
        return None
    if call.get("return_attention_scores") is True:
        return 2
    if type_ == "Bidirectional":
        inner = kwargs.get("layer")
        if not nested.is_spec(inner):
            return None
        merged = 2 if "merge_mode" in kwargs and kwargs["merge_mode"] is None else 1
        if not inner.get("return_state"):
            return merged
        states = _count_states(inner["type"], inner)
        return None if states is None else merged + 2 * states
    if kwargs.get("return_state") is True:
        states = _count_states(type_, kwargs)
        return None if states is None else 1 + states
    return 1


def _pick_words(name: str, count: int) -> str:
    return f"{name}[0]" if count == 1 else f"{name}[0] to {name}[{count - 1}]"


class _Resolver:
    def __init__(self, recipe: Recipe, doc: Document | None) -> None:
        self.recipe = recipe
        self.doc = doc
        self.subgraphs: dict[str, Graph] = {}  # in build order: a sub-model after those it calls
        self.resolving: list[str] = []

    def err(self, message: str, path: KeyPath, *, key: bool = False) -> RecipeError:
        return _error(self.doc, message, path, key=key)

    def known_types(self) -> list[str]:
        return [*catalog.names("layers"), *self.recipe.model.submodels, *self.recipe.blocks]

    def subgraph(self, name: str, path: KeyPath) -> Graph:
        """The resolved sub-model `name` (resolved on first use, so those it calls come first)."""
        if name in self.subgraphs:
            return self.subgraphs[name]
        if name in self.resolving:
            trail = " -> ".join([*self.resolving[self.resolving.index(name) :], name])
            raise self.err(f"sub-model {name!r} calls itself ({trail})", path)
        sub = self.recipe.model.submodels[name]
        self.resolving.append(name)
        graph = self.graph(name, sub, ("model", "submodels", name), trainable=sub.trainable)
        self.resolving.pop()
        self.subgraphs[name] = graph
        return graph

    def classify(self, node: ExpandedNode) -> tuple[NodeKind, str]:
        t = node.type
        assert t is not None
        if t in self.recipe.model.submodels:
            self.subgraph(t, (*node.path, "type"))
            return "submodel", t
        if ":" in t:
            return "custom", t
        if t.startswith(OPS_PREFIX):
            op = t[len(OPS_PREFIX) :]
            if catalog.entry("ops", op) is None:
                hint = catalog.did_you_mean(op, catalog.names("ops"))
                hint = hint.replace(" (did you mean '", " (did you mean 'ops.")
                raise self.err(f"unknown keras.ops function {op!r}{hint}", (*node.path, "type"))
            return "op", op
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
            "`ops.<function>`, `applications.<Model>` or an import path `module:Class`",
            (*node.path, "type"),
        )

    def first_argument(self, kind: NodeKind, type_: str) -> str | None:
        """The call (or op) argument that a node's `inputs` fill."""
        if kind == "op":
            entry = catalog.entry("ops", type_)
            return entry["order"][0] if entry and entry["order"] else None
        if kind == "layer":
            entry = catalog.entry("layers", type_)
            args = entry["call"]["args"] if entry else []
            return args[0] if args else None
        return None

    def graph(self, name: str, spec: GraphSpec, base: KeyPath, *, trainable: bool = True) -> Graph:
        expanded, aliases = expand_nodes(
            spec.layers, self.recipe.blocks, (*base, "layers"), self.doc, list(spec.inputs)
        )
        taken: dict[str, KeyPath] = {n: (*base, "inputs", n) for n in spec.inputs}
        keras_names: dict[str, str] = {}  # Keras layer name -> node name
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
            keras_name = layer_name(n.name)
            if keras_names.setdefault(keras_name, n.name) != n.name:
                other = keras_names[keras_name]
                raise self.err(
                    f"node names {other!r} and {n.name!r} both become Keras layer {keras_name!r} (the dots of block "
                    "copies are dashes in Keras' layer names); rename one",
                    (*n.path, "name"),
                )
            inputs = n.inputs
            first_arg = self.first_argument(kind, type_)
            by_keyword = first_arg is not None and first_arg in (n.kwargs if kind == "op" else n.call)
            if by_keyword and n.wired:
                inputs = []  # the first argument is given by keyword: nothing is taken from the previous node
            elif by_keyword and inputs:
                where = "as an argument" if kind == "op" else "in `call`"
                raise self.err(
                    f"node {n.name!r} gives {first_arg!r} both in `inputs` and {where}; keep one",
                    (*n.path, "inputs"),
                )
            elif inputs is None:
                raise self.err(
                    f"node {n.name!r} has no `inputs` and there is no single previous node to take; "
                    f"name its inputs (model inputs: {', '.join(spec.inputs)})",
                    n.path,
                )
            elif not inputs:
                raise self.err("`inputs` is empty", (*n.path, "inputs"))
            nodes.append(
                Node(
                    name=n.name,
                    kind=kind,
                    type=type_,
                    kwargs=n.kwargs,
                    call=n.call,
                    inputs=list(inputs),
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

    def check_ref(self, graph: Graph, names: set[str], node: Node | None, text: str, path: KeyPath, what: str) -> None:
        """One tensor reference: it names an input or node, and picks an output that exists."""
        ref = refs.parse(text)
        if ref is None or ref.base not in names:
            hint = catalog.did_you_mean(ref.base if ref else text, sorted(names))
            tail = "is not a node" if node is None else "is not defined"
            raise self.err(f"{what.format(ref=repr(text))} {tail}{hint}", path)
        target = refs.base(graph.resolve(ref.base))
        if node is not None and target == node.name:
            raise self.err(f"node {node.name!r} takes its own output as input", path)
        if target in graph.inputs:
            if ref.pick is not None:
                raise self.err(f"model input {target!r} is one tensor; drop [{ref.pick}]", path)
            return
        producer = graph.node(target)
        count = producer.outputs
        if isinstance(ref.pick, str):
            if producer.kind != "submodel" and not (producer.kind == "share" and producer.type in self.subgraphs):
                raise self.err(
                    f"{text!r}: outputs are picked by name only from sub-models; {target!r} is a "
                    f"{producer.type}: use an index, e.g. {target}[0]",
                    path,
                )
            outs = self.subgraphs[producer.type].outputs
            if ref.pick not in outs:
                hint = catalog.did_you_mean(ref.pick, outs)
                raise self.err(
                    f"sub-model {producer.type!r} has no output {ref.pick!r}{hint}; its outputs: {', '.join(outs)}",
                    path,
                )
        elif isinstance(ref.pick, int):
            if count == 1:
                raise self.err(f"node {target!r} ({producer.type}) gives one tensor; drop [{ref.pick}]", path)
            if count is not None and ref.pick >= count:
                raise self.err(
                    f"output index {ref.pick} is out of range: node {target!r} ({producer.type}) gives {count} "
                    f"tensors ({_pick_words(target, count)})",
                    path,
                )
        elif count is not None and count > 1:
            raise self.err(
                f"node {target!r} ({producer.type}) gives {count} tensors; pick one: {_pick_words(target, count)}",
                path,
            )

    def check_references(self, graph: Graph, base: KeyPath) -> None:
        names = set(graph.inputs) | {n.name for n in graph.nodes} | set(graph.aliases)
        by_name = {n.name: n for n in graph.nodes}
        for n in graph.nodes:
            if n.kind == "share":
                target = by_name.get(graph.resolve(n.share or ""))
                if target is None:
                    hint = catalog.did_you_mean(n.share or "", sorted(by_name))
                    raise self.err(f"`share` names {n.share!r}, which is not a node{hint}", (*n.path, "share"))
                if target.kind == "share":
                    n.share = target.share
                    target = by_name[graph.resolve(target.share or "")]
                n.type = target.type
                n.outputs = output_count(target.kind, target.type, target.kwargs, n.call)
                if target.kind == "submodel":
                    n.outputs = len(self.subgraphs[target.type].outputs)
            elif n.kind == "submodel":
                n.outputs = len(self.subgraphs[n.type].outputs)
            else:
                n.outputs = output_count(n.kind, n.type, n.kwargs, n.call)
        for n in graph.nodes:
            n.refs = []
            for i, ref in enumerate(n.inputs):
                self.check_ref(graph, names, n, ref, (*n.path, "inputs", i), f"input {{ref}} of node {n.name!r}")
                n.refs.append(ref)
            where = n.kwargs if n.kind == "op" else n.call
            key_path = n.path if n.kind == "op" else (*n.path, "call")
            for key, value in where.items():
                for text, path in refs.strings(value, (*key_path, key)):
                    if n.kind == "op" and refs.base(text) not in names:
                        continue  # an op's string argument that names no tensor is a plain value
                    what = f"{{ref}} in argument {key!r} of node {n.name!r}"
                    if n.kind != "op":
                        what = f"{{ref}} in call argument {key!r} of node {n.name!r}"
                    self.check_ref(graph, names, n, text, path, what)
                    n.refs.append(text)
        for i, out in enumerate(graph.outputs):
            self.check_ref(graph, names, None, out, (*base, "outputs", i), "output {ref}")
        if len(set(graph.outputs)) != len(graph.outputs):
            raise self.err("an output is listed twice", (*base, "outputs"))

    def topological(self, graph: Graph, base: KeyPath) -> list[Node]:
        by_name = {n.name: n for n in graph.nodes}
        order: list[Node] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def deps(n: Node) -> list[str]:
            names = [refs.base(graph.resolve(r)) for r in n.refs]
            if n.kind == "share" and n.share:
                names.append(graph.resolve(n.share))
            return [r for r in dict.fromkeys(names) if r in by_name]

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
                        where = "inputs" if n.inputs else ("call" if n.call else ())
                        raise self.err(
                            f"the graph has a cycle: {' -> '.join(reversed(cycle))}",
                            (*n.path, where) if where else n.path,
                        )
                    if state.get(child.name) != 2:
                        stack.append((child, 0))
                else:
                    state[n.name] = 2
                    trail.pop()
                    order.append(n)
        return order

    def check_call(self, n: Node, entry: dict[str, Any]) -> None:
        """A layer's call arguments: known to its `call()`, the required ones given."""
        spec = entry.get("call") or {"args": [], "required": [], "var_kwargs": True}
        args = spec["args"]
        for key in n.call:
            if key not in args and key not in _ANY_CALL and not spec["var_kwargs"]:
                hint = catalog.did_you_mean(key, args)
                raise self.err(
                    f"{n.type}.call() has no argument {key!r}{hint}; it takes {', '.join(args)}",
                    (*n.path, "call", key),
                    key=True,
                )
        covered = set(n.call) | set(args[:1] if n.inputs else ())
        for key in spec["required"]:
            if key not in covered:
                first = f"; `inputs` gives only its first argument {args[0]!r}" if args and n.inputs else ""
                raise self.err(
                    f"{n.type} needs call argument {key!r} (e.g. `call: {{{key}: <node>}}`){first}",
                    (*n.path, "call") if n.call else n.path,
                )

    def check_op(self, n: Node) -> None:
        """An op node: its positional inputs and keyword arguments fit the op's signature."""
        entry = catalog.entry("ops", n.type)
        assert entry is not None
        order = entry["order"]
        if len(n.inputs) > len(order):
            raise self.err(
                f"ops.{n.type} takes {len(order)} argument(s) ({', '.join(order)}), got {len(n.inputs)} inputs",
                (*n.path, "inputs"),
            )
        positional = order[: len(n.inputs)]
        for key in n.kwargs:
            if key in positional:
                raise self.err(f"ops.{n.type}: {key!r} is already given by `inputs`", (*n.path, key), key=True)
        plain = {k: v for k, v in n.kwargs.items() if not any(t in n.refs for t, _ in refs.strings(v, ()))}
        missing_ok = (*positional, *(k for k in n.kwargs if k not in plain))
        check_arguments(self.doc, f"ops.{n.type}", entry, plain, n.path, layer=False, skip=missing_ok)

    def check_nodes(self, graph: Graph) -> None:
        for n in graph.nodes:
            if n.kind == "layer":
                spec = catalog.entry("layers", n.type)
                assert spec is not None
                if spec["params"] and n.type == "InputLayer":
                    raise self.err("declare inputs under `model.inputs`, not as an InputLayer node", n.path)
                check_arguments(self.doc, n.type, spec, n.kwargs, n.path, layer=True)
                self.check_call(n, spec)
            elif n.kind == "op":
                self.check_op(n)
                if not n.refs:
                    raise self.err(
                        f"ops.{n.type} takes no tensor here: its result would be a constant outside the model's "
                        "graph; compute it from an input (e.g. positions as ops.cumsum of ops.ones_like(tokens))",
                        n.path,
                    )
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
            if n.kind == "share":
                target = graph.node(graph.resolve(n.share or ""))
                if target.kind == "layer":
                    spec = catalog.entry("layers", target.type)
                    assert spec is not None
                    self.check_call(n, spec)


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
    if section == "optimizers" and isinstance(lr, dict) and (not isinstance(lr.get("type"), str) or not lr["type"]):
        raise _error(doc, "a learning-rate schedule needs `type` (e.g. ExponentialDecay)", (*path, "learning_rate"))
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
    for sub_name in recipe.model.submodels:
        if sub_name in catalog.load_catalog()["layers"]:
            raise _error(
                doc,
                f"sub-model name {sub_name!r} hides the Keras layer of that name; rename it",
                ("model", "submodels", sub_name),
                key=True,
            )
    for block_name in recipe.blocks:
        if block_name in recipe.model.submodels or catalog.entry("layers", block_name):
            raise _error(
                doc,
                f"block name {block_name!r} is already a sub-model or Keras layer; rename it",
                ("blocks", block_name),
                key=True,
            )
    for sub_name in recipe.model.submodels:
        resolver.subgraph(sub_name, ("model", "submodels", sub_name))
    graph = resolver.graph(recipe.model.name or recipe.name, recipe.model, ("model",))
    graph.submodels = dict(resolver.subgraphs)
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
