"""`dlrun eject`: a recipe's resolved graph -> plain, readable Keras Python that builds the same model.

The code uses the functional API the way a person writes it: one line per layer call, a shared layer
as one variable called twice, each sub-model as a `build_<name>()` function whose model is built once
and called like a layer, each block as a Python function called once per use (in a loop for `repeat:`;
see eject_blocks.py for what stays unrolled, with a comment where each use starts). Layer names,
arguments and the order of weights are the ones `dlrun` builds, so weights transfer by order.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from typing import Any

from dlrun.graph import catalog, nested, refs
from dlrun.graph import eject_blocks as blocks
from dlrun.graph.check import Graph, Node, layer_name
from dlrun.graph.fold import takes_no_inputs
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import BlockSpec, Component, LayerNode

LINE = 120
RESERVED = {"keras", "layers", "model", "build_model", "compile_model", "np", "self"}


_Code = blocks.Code  # Python source already written (a tensor variable, a nested constructor): `_literal` keeps it


def _literal(value: Any) -> str:
    """Python source for a YAML value (strings in double quotes)."""
    if isinstance(value, _Code):
        return str(value)
    if isinstance(value, str):
        if '"' not in value and "\\" not in value and "\n" not in value:
            return f'"{value}"'
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + (",)" if len(value) == 1 else ")")
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _expression_names(text: str) -> set[str]:
    """The names the `${...}` expressions in `text` read."""
    import ast

    found: set[str] = set()
    for m in blocks.PATTERN.finditer(text):
        try:
            found |= {n.id for n in ast.walk(ast.parse(m.group(1).strip(), mode="eval")) if isinstance(n, ast.Name)}
        except SyntaxError:
            continue
    return found


def _call(func: str, args: list[str], indent: str, suffix: str = "", prefix: str = "") -> list[str]:
    """`prefix func(args)suffix` on one line, or one argument per line when too long."""
    one = f"{indent}{prefix}{func}({', '.join(args)}){suffix}"
    if len(one) <= LINE or not args:
        return [one]
    return [f"{indent}{prefix}{func}(", *[f"{indent}    {a}," for a in args], f"{indent}){suffix}"]


class _Names:
    """Python identifiers for node names, unique within one function."""

    def __init__(self, taken: set[str] | None = None) -> None:
        self.taken = set(RESERVED) | set(taken or ())
        self.by_node: dict[str, str] = {}

    def new(self, wanted: str) -> str:
        base = re.sub(r"\W", "_", wanted).strip("_") or "x"
        if base[0].isdigit():
            base = f"_{base}"
        if keyword.iskeyword(base) or keyword.issoftkeyword(base):
            base = f"{base}_"
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def tensor(self, node: str) -> str:
        if node not in self.by_node:
            self.by_node[node] = self.new(node)
        return self.by_node[node]


class _Ejector:
    def __init__(self, loaded: LoadedRecipe) -> None:
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.graph: Graph = loaded.graph
        self.imports: dict[str, str] = {}  # import line -> comment
        self.submodel_vars: dict[str, str] = {}
        self.module_names = _Names()  # functions and module-level names
        self.block_funcs: dict[str, str | None] = {}  # block -> its function (None: written unrolled)
        self.block_lines: list[str] = []

    # -- components and custom code ------------------------------------------------------------------

    def custom(self, ref: str) -> str:
        """`module:Name` -> the name, importing the module's top-level object."""
        module, _, attr = ref.partition(":")
        top = attr.split(".")[0]
        if module.endswith(".py"):
            stem = module[: -len(".py")].replace("/", ".").lstrip(".")
            self.imports[f"from {stem} import {top}"] = f"{module}, next to the recipe"
        else:
            self.imports[f"from {module} import {top}"] = ""
        return attr

    def component(self, section: str, comp: Component) -> str:
        """Python for an optimizer, loss, metric or schedule as `dlrun.graph.components.make` creates it."""
        if ":" in comp.type:
            cls = self.custom(comp.type)
            return f"{cls}({', '.join(f'{k}={_literal(v)}' for k, v in comp.kwargs.items())})"
        name = catalog.aliases(section).get(comp.type, comp.type)
        spec = catalog.entry(section, name)
        if spec is None or spec["kind"] == "function":
            return _literal(comp.type)
        if not comp.kwargs and name != comp.type:
            return _literal(comp.type)  # a Keras string identifier ("adam", "mse") as written
        module = {"schedules": "keras.optimizers.schedules"}.get(section, f"keras.{section}")
        args = []
        for key, value in comp.kwargs.items():
            if section == "optimizers" and key == "learning_rate" and isinstance(value, dict):
                args.append(f"learning_rate={self.component('schedules', Component.model_validate(value))}")
            else:
                args.append(f"{key}={_literal(value)}")
        return f"{module}.{name}({', '.join(args)})"

    # -- the graph -----------------------------------------------------------------------------------

    def producer(self, graph: Graph, ref: str) -> str:
        """The Keras name of the operation whose output `ref` is (what `build.py` compares outputs to)."""
        parsed = refs.parse(graph.resolve(ref))
        assert parsed is not None
        name = parsed.base
        if name in graph.inputs:
            return name
        node = graph.node(name)
        if parsed.pick is not None or node.kind == "op":
            return ""  # one output of several, or an op: never named as the recipe output
        if node.kind == "share":
            node = graph.node(graph.resolve(node.share or ""))
        if node.kind == "submodel":
            return node.type
        return node.name

    def nested(self, argument: str, value: Any) -> Any:
        """A nested `{type: ...}` spec (or a list of them) as the Python that constructs it."""
        if isinstance(value, list):
            return [self.nested(argument, v) for v in value]
        if not nested.is_spec(value):
            return value
        type_ = value["type"]
        args = [f"{k}={_literal(self.nested(k, v))}" for k, v in value.items() if k != "type"]
        if ":" in type_:
            return _Code(f"{self.custom(type_)}({', '.join(args)})")
        found = nested.lookup(argument, type_)
        section = found[0] if found else "layers"
        module = "layers" if section == "layers" else f"keras.{section}"
        if section == "schedules":
            module = "keras.optimizers.schedules"
        return _Code(f"{module}.{type_}({', '.join(args)})")

    @staticmethod
    def arguments(node: Node, tensor: Callable[[str], str]) -> dict[str, Any]:
        """The call (or op) keyword arguments with tensor references as the Python expressions for them."""

        def one(text: str) -> _Code | None:
            return _Code(tensor(text)) if text in node.refs else None

        return {key: refs.replace(value, one) for key, value in node.tensor_arguments().items()}

    def layer_parts(self, node: Node) -> tuple[str, list[str]]:
        """The constructor and its arguments for a layer or custom node."""
        args = [
            *[f"{k}={_literal(self.nested(k, v))}" for k, v in node.kwargs.items()],
            f"name={_literal(layer_name(node.name))}",
        ]
        if node.kind == "layer":
            return f"layers.{node.type}", args
        if node.kind == "custom":
            return self.custom(node.type), args
        raise AssertionError(node.kind)

    def application(self, node: Node, incoming: list[str], var: str, indent: str) -> list[str]:
        kwargs = dict(node.kwargs)
        weights = kwargs.pop("weights", None)
        trainable = kwargs.pop("trainable", True)
        kwargs.setdefault("include_top", False)
        local = isinstance(weights, str) and weights != "imagenet"
        args = [
            f"weights={_literal(None if local else weights)}",
            f"input_shape=tuple({incoming[0]}.shape[1:])",
            *[f"{k}={_literal(v)}" for k, v in kwargs.items()],
            f"name={_literal(layer_name(node.name))}",
        ]
        lines = _call(f"keras.applications.{node.type}", args, indent, prefix=f"{var} = ")
        if local:
            where = (self.loaded.base_dir / str(weights)).as_posix()
            lines.append(f"{indent}{var}.load_weights({_literal(where)})")
        if not trainable:
            lines.append(f"{indent}{var}.trainable = False")
        return lines

    def groups(
        self, graph: Graph, layers: list[LayerNode]
    ) -> dict[int, tuple[int, LayerNode, str, list[str], list[str]]]:
        """Block uses written as function calls: first node position -> (end, use node, use name, copy
        prefixes, input references). Uses whose block stays unrolled, or whose inner nodes are read from
        outside the use, are left out."""
        found: dict[int, tuple[int, LayerNode, str, list[str], list[str]]] = {}
        pos, previous = 0, next(iter(graph.inputs)) if len(graph.inputs) == 1 else None
        nodes = graph.nodes
        for node in layers:
            if node.when is not None and not node.when:
                continue
            if pos >= len(nodes):
                return {}
            if node.type not in self.recipe.blocks:
                if nodes[pos].block:
                    return {}  # not the expansion this walk expects: write everything unrolled
                previous = nodes[pos].name
                pos += 1
                continue
            start, first = pos, nodes[pos].block[0] if nodes[pos].block else None
            if first is None:
                return {}
            count = node.repeat if isinstance(node.repeat, int) else len(node.repeat or [None])
            use = first.rsplit(".", 1)[0] if count > 1 and not isinstance(node.repeat, str) else first
            while (
                pos < len(nodes)
                and nodes[pos].block
                and nodes[pos].block[0] in (use, *[f"{use}.{k + 1}" for k in range(count)])
            ):
                pos += 1
            incoming = list(node.inputs) if node.inputs is not None else [previous] if previous else []
            previous = use
            inside = {n.name for n in nodes[start:pos]}
            output = refs.base(graph.resolve(use))
            read = [
                graph.resolve(r)
                for n in [*nodes[:start], *nodes[pos:]]
                for r in [*n.refs, *([n.share] if n.share else [])]
            ]
            read += [graph.resolve(o) for o in graph.outputs]
            if isinstance(node.repeat, str) or not incoming or any(refs.base(r) in inside - {output} for r in read):
                continue
            if self.write_block(str(node.type)) is None:
                continue
            prefixes = list(dict.fromkeys(n.block[0] for n in nodes[start:pos]))
            found[start] = (pos, node, use, prefixes, incoming)
        return found

    def body(self, graph: Graph, names: _Names, indent: str, layers: list[LayerNode] = ()) -> list[str]:
        lines: list[str] = []
        for input_name, spec in graph.inputs.items():
            args = [f"shape={_literal(tuple(spec.shape))}"]
            if spec.dtype != "float32":
                args.append(f"dtype={_literal(spec.dtype)}")
            if spec.sparse:
                args.append("sparse=True")
            args.append(f"name={_literal(input_name)}")
            lines += _call("keras.Input", args, indent, prefix=f"{names.tensor(input_name)} = ")
        shared_targets = {graph.resolve(n.share or "") for n in graph.nodes if n.kind == "share"}
        layer_vars: dict[str, str] = {}
        block: tuple[str, ...] = ()

        def tensor(ref: str) -> str:
            parsed = refs.parse(graph.resolve(ref))
            assert parsed is not None
            var = names.tensor(parsed.base)
            pick = parsed.pick
            if isinstance(pick, str):
                pick = self.graph.submodels[graph.node(parsed.base).type].outputs.index(pick)
            return var if pick is None else f"{var}[{pick}]"

        groups = self.groups(graph, list(layers))
        end = -1
        for i, node in enumerate(graph.nodes):
            if i in groups:
                end, use_node, use, prefixes, incoming = groups[i]
                func = self.block_funcs[str(use_node.type)]
                out = names.new(use)
                ins = [tensor(r) for r in incoming]
                many = len(prefixes) > 1
                lines += self.use_lines(
                    str(func),
                    use_node,
                    ins,
                    out,
                    use,
                    _Code(_literal(layer_name(use))),
                    set(),
                    indent,
                    prefixes if many else None,
                )
                names.by_node[refs.base(graph.resolve(use))] = out
                block = ()
            if i < end:
                continue
            if node.block != block:
                if node.block:
                    lines.append(f"{indent}# {node.block[-1]}")
                block = node.block
            incoming = [tensor(r) for r in node.inputs]
            keyword = self.arguments(node, tensor)
            out = names.tensor(node.name)
            if node.kind == "op":
                args = [*incoming, *[f"{k}={_literal(v)}" for k, v in keyword.items()]]
                lines += _call(f"keras.ops.{node.type}", args, indent, prefix=f"{out} = ")
                continue
            arg = incoming[0] if len(incoming) == 1 else "[" + ", ".join(incoming) + "]"
            call = [*([arg] if incoming else []), *[f"{k}={_literal(v)}" for k, v in keyword.items()]]
            if node.kind == "share":
                target = graph.node(graph.resolve(node.share or ""))
                var = self.submodel_vars[target.type] if target.kind == "submodel" else layer_vars[target.name]
                lines += _call(var, call, indent, prefix=f"{out} = ")
                continue
            if node.kind == "submodel":
                lines += _call(self.submodel_vars[node.type], call, indent, prefix=f"{out} = ")
                continue
            if node.kind == "application":
                var = names.new(f"{node.name}_model")
                lines += self.application(node, incoming, var, indent)
                layer_vars[node.name] = var
                lines += _call(var, call, indent, prefix=f"{out} = ")
                continue
            func, args = self.layer_parts(node)
            if node.name in shared_targets:
                var = names.new(f"{node.name}_layer")
                layer_vars[node.name] = var
                lines.append(f"{indent}# {node.name}: one layer, called more than once (shared weights)")
                lines += _call(func, args, indent, prefix=f"{var} = ")
                lines += _call(var, call, indent, prefix=f"{out} = ")
            else:
                lines += _call(func, args, indent, prefix=f"{out} = ", suffix="(" + ", ".join(call) + ")")
        outputs = []
        for out in graph.outputs:
            value = tensor(out)
            if self.producer(graph, out) != out:
                # build.py keeps the recipe's output name with an Identity layer; so does this code.
                var = names.new(out)
                lines.append(f"{indent}{var} = layers.Identity(name={_literal(out)})({value})")
                value = var
            outputs.append(value)
        ins = [names.tensor(n) for n in graph.inputs]
        model_args = [
            f"inputs={ins[0] if len(ins) == 1 else '[' + ', '.join(ins) + ']'}",
            f"outputs={outputs[0] if len(outputs) == 1 else '[' + ', '.join(outputs) + ']'}",
            f"name={_literal(graph.name)}",
        ]
        lines += _call("keras.Model", model_args, indent, prefix="model = ")
        if not graph.trainable:
            lines.append(f"{indent}model.trainable = False")
        lines.append(f"{indent}return model")
        return lines

    # -- blocks as functions ---------------------------------------------------------------------------

    def write_block(self, block_name: str, stack: tuple[str, ...] = ()) -> str | None:
        """The Python function for a block (written once), or None when its uses stay unrolled."""
        if block_name in self.block_funcs:
            return self.block_funcs[block_name]
        if block_name in stack:
            return None
        func = self.module_names.new(block_name)
        try:
            lines = self.block_function(func, self.recipe.blocks[block_name], (*stack, block_name))
        except blocks.Unsupported:
            self.block_funcs[block_name] = None
            return None
        self.block_funcs[block_name] = func
        self.block_lines += [*lines, "", ""]
        return func

    def block_function(self, func: str, spec: BlockSpec, stack: tuple[str, ...]) -> list[str]:
        params = list(spec.params)
        fixed = {"name", "index", "count"}
        for p in [*params, *spec.inputs]:
            if not blocks.identifier(p) or p in fixed | RESERVED:
                raise blocks.Unsupported(p)
        allowed = set(params) | {"index", "count"}
        names = _Names({*params, *spec.inputs, *fixed, *self.module_names.taken})
        var_of = {i: i for i in spec.inputs}

        def tensor(text: str) -> str:
            parsed = refs.parse(text)
            if parsed is None or parsed.base not in var_of or isinstance(parsed.pick, str):
                raise blocks.Unsupported(text)
            return var_of[parsed.base] if parsed.pick is None else f"{var_of[parsed.base]}[{parsed.pick}]"

        body: list[str] = []
        previous = spec.inputs[0]
        shown: dict[str, str | None] = {}  # a conditional "previous" -> its condition
        for node, inner in zip(spec.layers, blocks.auto_names(spec.layers), strict=True):
            cond = None
            if isinstance(node.when, bool) and not node.when:
                continue
            if isinstance(node.when, str):
                whole = blocks.PATTERN.fullmatch(node.when)
                if whole is None:
                    raise blocks.Unsupported(node.when)
                cond = blocks.expression(whole.group(1), allowed)
            indent = "        " if cond else "    "
            if node.inputs is None and cond is not None and shown.get(previous) == cond:
                previous = previous.split(" if ")[0]  # made under the same condition as this node
            incoming = (
                [blocks.reference(r, tensor, allowed) for r in node.inputs] if node.inputs is not None else [previous]
            )
            if node.inputs is None and takes_no_inputs(str(node.type), node.kwargs):
                incoming = []  # `ops.subtract` with `x1: 3.0`: the tensor goes by keyword
            var = names.new(inner)
            label = _Code(f'f"{{name}}-{layer_name(inner)}"')  # the built model's names: graph.check.layer_name
            lines = self.node_lines(node, inner, incoming, var, label, tensor, allowed, indent, stack, set(var_of))
            body += [f"    if {cond}:", *lines] if cond else lines
            var_of[inner] = var
            previous = f"{var} if {cond} else {previous}" if cond else var
            shown[previous] = cond
        if spec.output is not None:
            if blocks.has_expression(spec.output) or spec.output not in var_of:
                raise blocks.Unsupported(spec.output)
            previous = var_of[spec.output]
        used = {n for text in _strings(spec.model_dump()) for n in _expression_names(text)}
        if "index" in used and any(n.repeat is not None for n in spec.layers):
            raise blocks.Unsupported("a loop inside would rebind the copy's `index`")
        signature = [*spec.inputs, "name: str", *[f"{p}={_literal(v)}" for p, v in spec.params.items()]]
        signature += [f"{n}=0" if n == "index" else f"{n}=1" for n in ("index", "count") if n in used]
        doc = f'    """Block `{stack[-1]}`: one copy, its layers named `<name>.<layer>`."""'
        return [*_call(f"def {func}", signature, "", suffix=":"), doc, *body, f"    return {previous}"]

    def node_lines(
        self,
        node: LayerNode,
        inner: str,
        incoming: list[str],
        var: str,
        label: str,
        tensor: Callable[[str], str],  # a tensor reference -> the Python expression naming it
        allowed: set[str],
        indent: str,
        stack: tuple[str, ...],
        own: set[str],
    ) -> list[str]:
        """One node of a block's function (`own`: the block's inputs and nodes, which ops arguments may name)."""
        kind = blocks.kind(node.type, self.recipe.blocks)
        kwargs = node.kwargs
        if kind == "block":
            func = self.write_block(str(node.type), stack)
            if func is None:
                raise blocks.Unsupported(str(node.type))
            return self.use_lines(func, node, incoming, var, inner, label, allowed - {"count"}, indent)
        if kind == "op":
            local = {
                k: refs.replace(v, lambda t: _Code(tensor(t)) if refs.base(t) in own else None)
                for k, v in kwargs.items()
            }
            args = [*incoming, *[f"{k}={_literal(blocks.value(v, allowed))}" for k, v in local.items()]]
            return _call(f"keras.ops.{str(node.type)[4:]}", args, indent, prefix=f"{var} = ")
        args = [f"{k}={_literal(self.nested(k, blocks.value(v, allowed)))}" for k, v in kwargs.items()]
        args.append(f"name={label}")
        func = f"layers.{node.type}" if kind == "layer" else self.custom(str(node.type))
        call = {k: refs.replace(v, lambda t: _Code(blocks.reference(t, tensor, allowed))) for k, v in node.call.items()}
        arg = incoming[0] if len(incoming) == 1 else "[" + ", ".join(incoming) + "]"
        args_call = [arg, *[f"{k}={_literal(v)}" for k, v in call.items()]]
        return _call(func, args, indent, prefix=f"{var} = ", suffix="(" + ", ".join(args_call) + ")")

    def use_lines(
        self,
        func: str,
        node: LayerNode,
        incoming: list[str],
        var: str,
        use: str,
        label: str,
        allowed: set[str],
        indent: str,
        prefixes: list[str] | None = None,
    ) -> list[str]:
        """A block use: one call, or a loop over its copies for `repeat`."""
        kwargs = {k: blocks.value(v, allowed | {"index"}) for k, v in node.kwargs.items()}
        repeat = node.repeat
        if isinstance(repeat, str):
            whole = blocks.PATTERN.fullmatch(repeat)
            if whole is None or prefixes is not None:
                raise blocks.Unsupported(repeat)
            repeat_py: Any = _Code(blocks.expression(whole.group(1), allowed))
        else:
            repeat_py = repeat
        if repeat is None or repeat == 1 or (isinstance(repeat, list) and len(repeat) == 1):
            over = repeat[0] if isinstance(repeat, list) else {}
            args = [*incoming, f"name={label}", *[f"{k}={_literal(v)}" for k, v in {**kwargs, **over}.items()]]
            return _call(func, args, indent, prefix=f"{var} = ")
        if any("count" in _expression_names(str(v)) for v in node.kwargs.values()):
            raise blocks.Unsupported("count")
        if prefixes is not None:
            header, name_expr = blocks.copy_names(prefixes, use)
        else:
            header = f"range({_literal(repeat_py) if not isinstance(repeat, list) else len(repeat)})"
            name_expr = f'f"{{name}}-{layer_name(use)}-{{index + 1}}"'
        lines = [f"{indent}{var} = {incoming[0]}"]
        rest = incoming[1:]
        if isinstance(repeat, list):
            copies = [blocks.value(o, allowed | {"index"}) for o in repeat]
            lines.append(f"{indent}for index, over in enumerate({_literal(copies)}):")
            given = ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in kwargs.items())
            params = f"**{{{given}, **over}}" if kwargs else "**over"
            args = [var, *rest, f"name={name_expr}", params]
        else:
            loop = f"index in {header}" if header.startswith("range") else f"index, copy_name in {header}"
            lines.append(f"{indent}for {loop}:")
            args = [var, *rest, f"name={name_expr}", *[f"{k}={_literal(v)}" for k, v in kwargs.items()]]
        lines += _call(func, args, indent + "    ", prefix=f"{var} = ")
        return lines

    # -- the file ------------------------------------------------------------------------------------

    def compile_lines(self) -> list[str]:
        spec = self.recipe.compile
        outputs = self.graph.outputs
        args = [f"optimizer={self.component('optimizers', spec.optimizer)}"]
        if isinstance(spec.loss, dict):
            loss = "{" + ", ".join(f"{_literal(o)}: {self.component('losses', spec.loss[o])}" for o in outputs) + "}"
        elif len(outputs) > 1:
            one = self.component("losses", spec.loss)
            loss = "{" + ", ".join(f"{_literal(o)}: {one}" for o in outputs) + "}"
        else:
            loss = self.component("losses", spec.loss)
        args.append(f"loss={loss}")
        if spec.loss_weights is not None:
            weights = {o: float(spec.loss_weights.get(o, 1.0)) for o in outputs}
            args.append(f"loss_weights={_literal(weights)}")

        def metric_list(comps: list[Component]) -> str:
            return "[" + ", ".join(self.component("metrics", c) for c in comps) + "]"

        if isinstance(spec.metrics, dict):
            metrics = "{" + ", ".join(f"{_literal(o)}: {metric_list(spec.metrics.get(o, []))}" for o in outputs) + "}"
            args.append(f"metrics={metrics}")
        elif spec.metrics and len(outputs) > 1:
            one = metric_list(spec.metrics)
            args.append("metrics={" + ", ".join(f"{_literal(o)}: {one}" for o in outputs) + "}")
        elif spec.metrics:
            args.append(f"metrics={metric_list(spec.metrics)}")
        if spec.jit_compile != "auto":
            args.append(f"jit_compile={spec.jit_compile!r}")
        if spec.steps_per_execution not in ("auto", 1):  # "auto" only changes speed, not results
            args.append(f"steps_per_execution={spec.steps_per_execution}")
        return _call("model.compile", args, "    ")

    def code(self) -> str:
        graph = self.graph
        functions: list[str] = []
        main_names = self.module_names
        for block_name in self.recipe.blocks:
            self.write_block(block_name)
        calls: dict[str, list[str]] = {}
        for sub_name, sub in graph.submodels.items():  # in dependency order: a sub-model after those it calls
            func = main_names.new(f"build_{sub_name}")
            self.submodel_vars[sub_name] = main_names.new(sub_name)
            callees = list(dict.fromkeys(n.type for n in sub.nodes if n.kind == "submodel"))
            calls[sub_name] = [self.submodel_vars[c] for c in callees]
            params = ", ".join(f"{v}: keras.Model" for v in calls[sub_name])
            doc = f'    """Sub-model `{sub_name}`: built once, then called like a layer (its weights are shared)."""'
            local = _Names(set(calls[sub_name]) | self.module_names.taken)
            layers = self.recipe.model.submodels[sub_name].layers
            functions += [f"def {func}({params}) -> keras.Model:", doc, *self.body(sub, local, "    ", layers), "", ""]
            self.submodel_vars[f"{sub_name}()"] = func
        build = ["def build_model() -> keras.Model:", f'    """The `{self.recipe.name}` model."""']
        for sub_name in graph.submodels:
            args = ", ".join(calls[sub_name])
            build.append(f"    {self.submodel_vars[sub_name]} = {self.submodel_vars[f'{sub_name}()']}({args})")
        build += self.body(graph, main_names, "    ", self.recipe.model.layers)
        compile_ = [
            "def compile_model(model: keras.Model) -> None:",
            '    """`compile:` of the recipe."""',
            *self.compile_lines(),
        ]
        train = self.recipe.train
        source = self.loaded.source
        header = [
            f'"""{self.recipe.name}: the model of `{source}` in plain Keras (written by `dlrun eject`).',
            "",
            "Layer names, arguments and weight order are the ones `dlrun` builds from the recipe.",
            "Not included: the data section (loading, steps, preprocess layers), callbacks and stages.",
            '"""',
            "",
        ]
        imports = ["import keras", "from keras import layers"]
        for line, comment in sorted(self.imports.items()):
            imports.append(f"{line}  # {comment}" if comment else line)
        fit = [f"epochs={sum(s.epochs for s in train.stages) or train.epochs}", f"batch_size={train.batch_size}"]
        main = [
            'if __name__ == "__main__":',
            f"    keras.utils.set_random_seed({self.recipe.seed})",
            "    model = build_model()",
            "    compile_model(model)",
            "    model.summary()",
            f"    # model.fit(x, y, {', '.join(fit)})",
        ]
        text = "\n".join(
            [*header, *imports, "", "", *self.block_lines, *functions, *build, "", "", *compile_, "", "", *main]
        )
        return text + "\n"


def eject(loaded: LoadedRecipe) -> str:
    """Plain Keras Python for the recipe's model (`build_model()`, `compile_model(model)`)."""
    return _Ejector(loaded).code()
