"""`dlrun eject`: a recipe's resolved graph -> plain, readable Keras Python that builds the same model.

The code uses the functional API the way a person writes it: one line per layer call, a shared layer
as one variable called twice, each sub-model as a `build_<name>()` function whose model is built once
and called like a layer, blocks already expanded (with a comment where each use starts). Layer names,
arguments and the order of weights are the ones `dlrun` builds, so weights transfer by order.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

from dlrun.graph import catalog, nested, refs
from dlrun.graph.check import Graph, Node
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import Component

LINE = 120
RESERVED = {"keras", "layers", "model", "build_model", "compile_model", "np", "self"}


class _Code(str):
    """Python source already written (a tensor variable, a nested constructor): `_literal` keeps it."""


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
        """Python for an optimizer, loss, metric or schedule as `dlrun.components.make` creates it."""
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
    def arguments(node: Node, tensor: Any) -> dict[str, Any]:
        """The call (or op) keyword arguments with tensor references as the Python expressions for them."""

        def one(text: str) -> _Code | None:
            return _Code(tensor(text)) if text in node.refs else None

        return {key: refs.replace(value, one) for key, value in node.tensor_arguments().items()}

    def layer_parts(self, node: Node) -> tuple[str, list[str]]:
        """The constructor and its arguments for a layer or custom node."""
        args = [
            *[f"{k}={_literal(self.nested(k, v))}" for k, v in node.kwargs.items()],
            f"name={_literal(node.name)}",
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
            f"name={_literal(node.name)}",
        ]
        lines = _call(f"keras.applications.{node.type}", args, indent, prefix=f"{var} = ")
        if local:
            where = (self.loaded.base_dir / str(weights)).as_posix()
            lines.append(f"{indent}{var}.load_weights({_literal(where)})")
        if not trainable:
            lines.append(f"{indent}{var}.trainable = False")
        return lines

    def body(self, graph: Graph, names: _Names, indent: str) -> list[str]:
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

        for node in graph.nodes:
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
        main_names = _Names()
        calls: dict[str, list[str]] = {}
        for sub_name, sub in graph.submodels.items():  # in dependency order: a sub-model after those it calls
            func = main_names.new(f"build_{sub_name}")
            self.submodel_vars[sub_name] = main_names.new(sub_name)
            callees = list(dict.fromkeys(n.type for n in sub.nodes if n.kind == "submodel"))
            calls[sub_name] = [self.submodel_vars[c] for c in callees]
            params = ", ".join(f"{v}: keras.Model" for v in calls[sub_name])
            doc = f'    """Sub-model `{sub_name}`: built once, then called like a layer (its weights are shared)."""'
            local = _Names(set(calls[sub_name]))
            functions += [f"def {func}({params}) -> keras.Model:", doc, *self.body(sub, local, "    "), "", ""]
            self.submodel_vars[f"{sub_name}()"] = func
        build = ["def build_model() -> keras.Model:", f'    """The `{self.recipe.name}` model."""']
        for sub_name in graph.submodels:
            args = ", ".join(calls[sub_name])
            build.append(f"    {self.submodel_vars[sub_name]} = {self.submodel_vars[f'{sub_name}()']}({args})")
        build += self.body(graph, main_names, "    ")
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
        text = "\n".join([*header, *imports, "", "", *functions, *build, "", "", *compile_, "", "", *main])
        return text + "\n"


def eject(loaded: LoadedRecipe) -> str:
    """Plain Keras Python for the recipe's model (`build_model()`, `compile_model(model)`)."""
    return _Ejector(loaded).code()
