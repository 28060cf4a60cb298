"""`${...}` substitution: the small, safe expression language of blocks and recipe interpolation.

An expression is Python syntax restricted to literals, names bound by the caller, arithmetic,
comparisons, `and`/`or`/`not`, `x if c else y`, indexing and a few pure functions. Nothing else parses:
no attribute access, no calls of arbitrary names, no comprehensions. A string that is exactly one
`${expr}` keeps the value's type (`"${filters * 2}"` -> 128); `${}` inside longer text is formatted in.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

PATTERN = re.compile(r"\$\{([^{}]*)\}")

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "str": str,
    "len": len,
    "round": round,
    "abs": abs,
}


MAX_SEQUENCE = 100_000  # longest string or list an expression may build


class ExprError(ValueError):
    """An expression that does not parse, names something unknown, or fails to evaluate."""


def _eval(node: ast.AST, names: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        if node.id in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[node.id]
        known = ", ".join(sorted(names)) or "none"
        raise ExprError(f"unknown name {node.id!r} (known: {known})")
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, names) for e in node.elts]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, names), _eval(node.right, names)
        if isinstance(node.op, ast.Pow) and isinstance(right, int | float) and abs(right) > 64:
            raise ExprError("exponent too large")
        if isinstance(node.op, ast.Mult) and any(isinstance(v, str | list) for v in (left, right)):
            count = right if isinstance(left, str | list) else left
            size = len(left if isinstance(left, str | list) else right)
            if isinstance(count, int) and count * size > MAX_SEQUENCE:
                raise ExprError(f"result longer than {MAX_SEQUENCE} items")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, names)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, names) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, names)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, names)
            if type(op) not in _CMPOPS or not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, names) if _eval(node.test, names) else _eval(node.orelse, names)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, names)[_eval(node.slice, names)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if node.keywords:
            raise ExprError("keyword arguments are not supported in expressions")
        return FUNCTIONS[node.func.id](*[_eval(a, names) for a in node.args])
    raise ExprError(f"not allowed in an expression: {ast.unparse(node)!r}")


def evaluate(expression: str, names: Mapping[str, Any]) -> Any:
    """Evaluate one expression (the text between `${` and `}`)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression {expression!r}: {exc.msg}") from None
    try:
        return _eval(tree, names)
    except ExprError:
        raise
    except (TypeError, ValueError, ArithmeticError, IndexError, KeyError, RecursionError) as exc:
        raise ExprError(f"expression {expression!r} failed: {exc}") from None


def substitute(value: Any, names: Mapping[str, Any]) -> Any:
    """Replace `${...}` in strings of `value` (recursively through lists and mappings)."""
    if isinstance(value, str):
        whole = PATTERN.fullmatch(value.strip())
        if whole:
            return evaluate(whole.group(1), names)
        if "${" in value:
            return PATTERN.sub(lambda m: str(evaluate(m.group(1), names)), value)
        return value
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


def has_expression(value: Any) -> bool:
    """Whether `value` contains any `${...}`."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, list):
        return any(has_expression(v) for v in value)
    if isinstance(value, dict):
        return any(has_expression(v) for v in value.values())
    return False
