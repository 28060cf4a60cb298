"""Blocks in ejected code: each recipe block as one Python function, each use as a call (in a loop for `repeat`).

`eject` writes a block's copies this way when it can say the block in Python: `${...}` expressions are
Python already (they become the function's arguments, `if` for `when:`, a conditional tensor for
`inputs: "${'a' if p else 'b'}"`); anything else (`share:` inside a block, a sub-model or application
inside one, an expression naming nodes outside the block) leaves that block's uses unrolled, node by node.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Callable
from typing import Any

from dlrun.graph import catalog
from dlrun.graph.check import layer_name
from dlrun.recipe.expr import PATTERN, has_expression
from dlrun.recipe.schema import BlockSpec, LayerNode
from dlrun.util import snake_case

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Unsupported(Exception):
    """A construct this writer does not say as Python: the block's uses stay unrolled."""


class Code(str):
    """Python source already written (`_literal` in eject.py keeps it as it is)."""


def expression(text: str, allowed: set[str]) -> str:
    """A `${...}` expression as Python (the expression language is a subset of Python's)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise Unsupported(text) from exc
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if not names <= allowed:
        raise Unsupported(f"{text}: {sorted(names - allowed)}")
    return ast.unparse(tree)


def value(raw: Any, allowed: set[str]) -> Any:
    """A YAML value with each `${...}` replaced by the Python that computes it."""
    if isinstance(raw, str) and has_expression(raw):
        whole = PATTERN.fullmatch(raw)
        if whole:
            return Code(expression(whole.group(1), allowed))
        parts = []
        last = 0
        for m in PATTERN.finditer(raw):
            parts.append(raw[last : m.start()].replace("{", "{{").replace("}", "}}"))
            parts.append("{" + expression(m.group(1), allowed) + "}")
            last = m.end()
        parts.append(raw[last:].replace("{", "{{").replace("}", "}}"))
        text = "".join(parts)
        if '"' in text or "\\" in text:
            raise Unsupported(raw)
        return Code(f'f"{text}"')
    if isinstance(raw, list):
        return [value(v, allowed) for v in raw]
    if isinstance(raw, dict):
        return {k: value(v, allowed) for k, v in raw.items()}
    return raw


def reference(raw: str, tensor: Callable[[str], str], allowed: set[str]) -> str:
    """A tensor reference (maybe `${'a' if p else 'b'}`) as the Python naming that tensor."""
    if not has_expression(raw):
        return tensor(raw)
    whole = PATTERN.fullmatch(raw)
    if not whole:
        raise Unsupported(raw)
    tree = ast.parse(expression(whole.group(1), allowed), mode="eval")

    class Swap(ast.NodeTransformer):
        def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
            return ast.IfExp(test=node.test, body=self.visit(node.body), orelse=self.visit(node.orelse))

        def visit_Constant(self, node: ast.Constant) -> ast.AST:
            if isinstance(node.value, str):
                return ast.parse(tensor(node.value), mode="eval").body
            raise Unsupported(raw)

    body = tree.body
    if not isinstance(body, ast.IfExp | ast.Constant):
        raise Unsupported(raw)
    return ast.unparse(Swap().visit(body))


def identifier(name: str) -> bool:
    return bool(_IDENTIFIER.match(name)) and not keyword.iskeyword(name)


def auto_names(layers: list[LayerNode]) -> list[str]:
    """Each block node's name inside its copy: its own, or Keras-style `conv2d`, `conv2d_1` (as expand.py)."""
    counters: dict[str, int] = {}
    explicit = {n.name for n in layers if n.name}
    out = []
    for node in layers:
        if node.name:
            if has_expression(node.name):
                raise Unsupported(node.name)
            out.append(node.name)
            continue
        stem = snake_case(str(node.type or node.share).split(":")[-1].split(".")[-1])
        while True:
            count = counters.get(stem, 0)
            counters[stem] = count + 1
            name = stem if count == 0 else f"{stem}_{count}"
            if name not in explicit:
                break
        out.append(name)
    return out


def kind(type_: str | None, blocks: dict[str, BlockSpec]) -> str:
    """How a block node is written: a Keras layer, a custom class, an op, or a block use."""
    if type_ is None or has_expression(type_):
        raise Unsupported("share or computed type")
    if type_ in blocks:
        return "block"
    if type_.startswith("ops.") and catalog.entry("ops", type_[4:]) is not None:
        return "op"
    if ":" in type_:
        return "custom"
    if catalog.entry("layers", type_) is not None:
        return "layer"
    raise Unsupported(type_)


def copy_names(prefixes: list[str], use: str) -> tuple[str, str]:
    """(loop header, name expression) for a use's copies, from the names the expansion gave them."""
    pattern = [f"{use}.{k + 1}" for k in range(len(prefixes))]
    if prefixes == pattern:
        return f"range({len(prefixes)})", f'f"{layer_name(use)}-{{index + 1}}"'
    return f"enumerate({[layer_name(p) for p in prefixes]!r})", "copy_name"
