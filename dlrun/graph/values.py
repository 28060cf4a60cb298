"""Value checks for Keras keyword arguments, from the catalog (no TensorFlow).

What each argument accepts was read from Keras when the catalog was generated (`make catalog`; see the
catalog's `derived` section): string identifiers from Keras' own registries (`activation: relux`), string
choices Keras' constructors check (`padding: samee`), and numeric ranges the constructors enforce
(`units: 0`), plus dlrun's bound on sizes (`units: 10**12`). Nested `{type: ...}` objects are left to the
nested resolver; import paths `module:Name` are checked when imported.
"""

from __future__ import annotations

import re
from typing import Any

from dlrun.graph import catalog


def _registry(kind: str) -> list[str]:
    return catalog.load_catalog().get("registries", {}).get(kind, [])


def _ints(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, int) and not isinstance(v, bool)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _interval(facts: dict[str, Any]) -> str:
    low = f"[{facts['minimum']}" if "minimum" in facts else f"({facts.get('exclusive_minimum', '-inf')}"
    high = f"{facts['maximum']}]" if "maximum" in facts else f"{facts.get('exclusive_maximum', 'inf')})"
    return f"{low}, {high}"


def _range_problem(value: Any, facts: dict[str, Any]) -> str | None:
    for v in _ints(value) if isinstance(value, list) else ([value] if _number(value) else []):
        high = facts.get("maximum")
        if high == catalog.MAX_DIMENSION and v > high:
            return f"{v!r} is above {high} (2**31 - 1), the largest size a tensor dimension holds"
        if high == catalog.MAX_DIMENSION and facts.get("minimum") in (0, 1) and v < facts["minimum"]:
            word = "a positive" if facts["minimum"] == 1 else "a non-negative"
            return f"expected {word} integer, got {v!r}"
        below = v < facts.get("minimum", v) or v <= facts.get("exclusive_minimum", v - 1)
        above = v > facts.get("maximum", v) or v >= facts.get("exclusive_maximum", v + 1)
        if below or above:
            return f"expected a number in {_interval(facts)}, got {v!r}"
    return None


def value_problem(value: Any, facts: dict[str, Any]) -> str | None:
    """Why `value` is not accepted under `facts` (a catalog `values` entry), or None when it is."""
    if "registry" in facts:
        if not isinstance(value, str) or ":" in value:
            return None  # None, a nested {type: ...} object, a custom import path: checked elsewhere
        names = _registry(facts["registry"])
        if value in names:
            return None
        kind = facts["registry"][:-1]
        hint = catalog.did_you_mean(value, names)
        if hint:
            return f"unknown {kind} {value!r}{hint}"
        shown = ", ".join(n for n in names if n.islower() or facts["registry"] == "activations")
        return f"unknown {kind} {value!r}; Keras knows: {shown}"
    if "enum" in facts:
        if not isinstance(value, str):
            return None
        choices = facts["enum"]
        probe = value.lower() if facts.get("case_insensitive") else value
        if probe in choices:
            return None
        hint = catalog.did_you_mean(value, choices)
        return f"{value!r} is not one of {', '.join(repr(c) for c in choices)}{hint}"
    return _range_problem(value, facts)


def argument_facts(spec: dict[str, Any], name: str, *, layer: bool) -> dict[str, Any] | None:
    """The catalog's value facts for argument `name` of a catalog entry (base Layer arguments included)."""
    facts = spec.get("values", {}).get(name)
    if facts is None and layer:
        facts = catalog.load_catalog().get("base_layer_values", {}).get(name)
    return facts


def argument_problem(spec: dict[str, Any], key: str, value: Any, *, layer: bool) -> str | None:
    """Why Keras would refuse `value` for argument `key` of a catalog entry, or None (also for `${...}`,
    which is checked once substituted)."""
    facts = argument_facts(spec, key, layer=layer)
    if facts is None or (isinstance(value, str) and "${" in value):
        return None
    return value_problem(value, facts)


def origin(data: Any, path: tuple[str | int, ...], key: str, value: Any) -> tuple[str | int, ...] | None:
    """Where a block argument's value was written: for `padding: "${pad}"` in `blocks.<b>.layers[i]`, the
    `pad:` of the block use that passed `value` (None when it is not a whole `${param}` or not found)."""
    if len(path) < 2 or path[0] != "blocks" or not isinstance(data, dict):
        return None
    try:
        raw = data["blocks"][path[1]]["layers"][path[3]][key]
    except (KeyError, IndexError, TypeError):
        return None
    match = re.fullmatch(r"\$\{\s*([A-Za-z_]\w*)\s*\}", raw) if isinstance(raw, str) else None
    if match is None:
        return None
    param = match.group(1)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    graphs = [(("model",), model)]
    subs = model.get("submodels") if isinstance(model.get("submodels"), dict) else {}
    graphs += [(("model", "submodels", k), v) for k, v in subs.items() if isinstance(v, dict)]
    for base, graph in graphs:
        layers = graph.get("layers") if isinstance(graph.get("layers"), list) else []
        for i, node in enumerate(layers):
            if isinstance(node, dict) and node.get("type") == path[1] and node.get(param) == value:
                return (*base, "layers", i, param)
    return None
