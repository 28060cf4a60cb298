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


# Limits that keep every expression in bounded time and memory (real recipes stay far below each).
MAX_SEQUENCE = 100_000  # characters of a string; items of a list, nested items included
MAX_INT_BITS = 256  # bit length of an integer result (10**64 is 213 bits)
MAX_EXPONENT = 64
MAX_TEXT = 10_000  # characters of one expression
MAX_AST_NODES = 1_000
MAX_AST_DEPTH = 50

# printf-style conversions: `%(name)-08.3f`; a width or precision is the only way `%` builds big strings.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?")


class ExprError(ValueError):
    """An expression that does not parse, names something unknown, or fails to evaluate."""


_SCALARS = (int, float, bool, type(None))


class _TooBig(ExprError):
    """A result (or an operation's operands) beyond the limits; `evaluate` names the expression."""


class _Sizes:
    """Sizes of the values one evaluation builds, each computed once (lists may share items)."""

    def __init__(self) -> None:
        self.known: dict[int, int] = {}
        self.alive: list[Any] = []  # keeps sized objects alive so their ids stay unique

    def of(self, value: Any) -> int:
        """Characters of a string; for a list, its items plus each item's own size (capped past the limit)."""
        if isinstance(value, str):
            return len(value)
        if not isinstance(value, list | tuple | dict):
            return 0  # a number or None: counted as one item of the list holding it
        if id(value) in self.known:
            return self.known[id(value)]
        items = list(value.items()) if isinstance(value, dict) else value
        if isinstance(value, dict):
            items = [part for pair in items for part in pair]
        total = len(value)
        for item in items:
            if type(item) in _SCALARS:
                continue  # counted in len(); no call per number (lists of 100,000 numbers are common)
            if total > MAX_SEQUENCE:
                break
            total += self.of(item)
        self.known[id(value)] = total
        self.alive.append(value)
        return total

    def check(self, value: Any) -> Any:
        """`value`, or `ExprError` when it is bigger than an expression may build."""
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _TooBig(f"integer result larger than {MAX_INT_BITS} bits")
        elif self.of(value) > MAX_SEQUENCE:
            raise _TooBig(f"result longer than {MAX_SEQUENCE} items")
        return value


def _refuse_big_operation(op: ast.operator, left: Any, right: Any, sizes: _Sizes) -> None:
    """Refuse, before computing it, an operation whose result would exceed the limits."""
    ints = all(isinstance(v, int) for v in (left, right))
    if isinstance(op, ast.Pow) and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
        raise _TooBig(f"exponent larger than {MAX_EXPONENT}")
    if isinstance(op, ast.Pow) and ints and right > 0 and (left.bit_length() - 1) * right > MAX_INT_BITS:
        raise _TooBig(f"integer result larger than {MAX_INT_BITS} bits")
    if isinstance(op, ast.Mult):
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise _TooBig(f"integer result larger than {MAX_INT_BITS} bits")
        seq, count = (left, right) if isinstance(left, str | list) else (right, left)
        if isinstance(seq, str | list) and isinstance(count, int) and count * sizes.of(seq) > MAX_SEQUENCE:
            raise _TooBig(f"result longer than {MAX_SEQUENCE} items")
    pair = isinstance(left, str | list) and isinstance(right, str | list)
    if isinstance(op, ast.Add) and pair and sizes.of(left) + sizes.of(right) > MAX_SEQUENCE:
        raise _TooBig(f"result longer than {MAX_SEQUENCE} items")
    if isinstance(op, ast.Mod) and isinstance(left, str):
        for match in _PRINTF.finditer(left):
            for field in match.groups():
                if field == "*":
                    raise _TooBig("`%*` (width from an argument) is not supported in expressions")
                if field and int(field) > MAX_SEQUENCE:
                    raise _TooBig(f"format width or precision {int(field)} is larger than {MAX_SEQUENCE}")


def _eval(node: ast.AST, names: Mapping[str, Any], sizes: _Sizes) -> Any:
    return sizes.check(_eval_node(node, names, sizes))


def _eval_node(node: ast.AST, names: Mapping[str, Any], sizes: _Sizes) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, names, sizes)
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
        return [_eval(e, names, sizes) for e in node.elts]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, names, sizes), _eval(node.right, names, sizes)
        _refuse_big_operation(node.op, left, right, sizes)
        if isinstance(node.op, ast.Mod) and isinstance(left, str) and isinstance(right, list):
            right = tuple(right)  # `'%d-%d' % [a, b]`: a list literal is the argument list, as a tuple is
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, names, sizes)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, names, sizes) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, names, sizes)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, names, sizes)
            if type(op) not in _CMPOPS or not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        test = _eval(node.test, names, sizes)
        return _eval(node.body, names, sizes) if test else _eval(node.orelse, names, sizes)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, names, sizes)[_eval(node.slice, names, sizes)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if node.keywords:
            raise ExprError("keyword arguments are not supported in expressions")
        return FUNCTIONS[node.func.id](*[_eval(a, names, sizes) for a in node.args])
    raise ExprError(f"not allowed in an expression: {ast.unparse(node)!r}")


def _parse(expression: str) -> ast.Expression:
    """Parse under the text, node-count and depth limits (checked without recursion)."""
    text = expression.strip()
    if len(text) > MAX_TEXT:
        raise ExprError(f"expression is longer than {MAX_TEXT} characters; refused")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression {_shown(expression)}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExprError(f"expression nests too deeply to parse (more than {MAX_AST_DEPTH} levels); refused") from None
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_AST_NODES:
            raise ExprError(f"expression has more than {MAX_AST_NODES} parts; refused")
        if depth > MAX_AST_DEPTH:
            raise ExprError(f"expression nests more than {MAX_AST_DEPTH} levels deep; refused")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _shown(expression: str) -> str:
    """The expression as an error quotes it: short enough for one line."""
    text = expression.strip()
    return repr(text if len(text) <= 80 else text[:77] + "...")


def evaluate(expression: str, names: Mapping[str, Any]) -> Any:
    """Evaluate one expression (the text between `${` and `}`) in bounded time and memory."""
    tree = _parse(expression)
    try:
        return _eval(tree, names, _Sizes())
    except _TooBig as exc:
        raise ExprError(f"expression {_shown(expression)}: {exc}; refused") from None
    except ExprError:
        raise
    except (TypeError, ValueError, ArithmeticError, IndexError, KeyError) as exc:
        raise ExprError(f"expression {_shown(expression)} failed: {exc}") from None
    except (RecursionError, MemoryError):
        raise ExprError(f"expression {_shown(expression)} is too large to evaluate; refused") from None


def substitute(value: Any, names: Mapping[str, Any]) -> Any:
    """Replace `${...}` in strings of `value` (recursively through lists and mappings)."""
    if isinstance(value, str):
        whole = PATTERN.fullmatch(value.strip())
        if whole:
            return evaluate(whole.group(1), names)
        if "${" in value:
            return _format_in(value, names)
        return value
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


def _format_in(text: str, names: Mapping[str, Any]) -> str:
    """`text` with each `${}` formatted in; the whole string stays under MAX_SEQUENCE characters."""
    parts, size, last = [], 0, 0
    for match in PATTERN.finditer(text):
        piece = text[last : match.start()] + str(evaluate(match.group(1), names))
        size += len(piece)
        if size > MAX_SEQUENCE:
            raise ExprError(f"text with its `${{}}` formatted in is longer than {MAX_SEQUENCE} characters; refused")
        parts.append(piece)
        last = match.end()
    parts.append(text[last:])
    return "".join(parts)


def has_expression(value: Any) -> bool:
    """Whether `value` contains any `${...}`."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, list):
        return any(has_expression(v) for v in value)
    if isinstance(value, dict):
        return any(has_expression(v) for v in value.values())
    return False
