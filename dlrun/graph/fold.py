"""Folding an imported graph: repeated structure -> `blocks:` used with `repeat:`.

`dlrun import` writes one node per layer call; a ResNet50 is 177 of them. Here runs of consecutive nodes
that are the same sub-graph (same layer types, argument names and wiring, one tensor coming in, only the
last node read from outside) become one block; the arguments whose values differ between the copies
become the block's parameters (`${filters}`, or `${filters * 4}` where one is a multiple of another).
The unit saving the most lines is folded first, then the next, until nothing repeats. Copies that follow
each other become one use with `repeat:` (and per-copy values in a `repeat:` list where they change).
Node order is kept, so the expanded recipe builds the layers, and so the weights, in the original order.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dlrun.graph import catalog, refs
from dlrun.recipe.schema import NAME_PATTERN
from dlrun.util import snake_case

RESERVED = ("name", "type", "share", "inputs", "call")
MAX_LENGTH = 64  # nodes in one block: longer repeats are rare and the window search grows with it
MAX_PARAMS = 6
MAX_ENTRIES = 2  # tensors coming into a block (NASNet's cells read the two cells before them)
ENTRY_NAMES = ("x", "y")  # more differing arguments than this and the copies are not "the same block"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(NAME_PATTERN)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _refs_of(node: dict[str, Any], known: set[str]) -> list[str]:
    """Reference strings in a node: its inputs, every string of its call, op arguments naming a tensor."""
    found: list[str] = []
    inputs = node.get("inputs")
    found += [inputs] if isinstance(inputs, str) else list(inputs or [])
    found += [s for s, _ in refs.strings(node.get("call") or {}, ())]
    if str(node.get("type", "")).startswith("ops."):
        args = {k: v for k, v in node.items() if k not in RESERVED}
        found += [s for s, _ in refs.strings(args, ()) if refs.base(s) in known]
    return found


def _rename(node: dict[str, Any], mapping: dict[str, str], known: set[str]) -> dict[str, Any]:
    """The node with the references whose base is in `mapping` renamed."""

    def one(text: str) -> str | None:
        base = refs.base(text)
        return refs.rename(text, lambda b: mapping[b]) if base in mapping else None

    out = {}
    for key, value in node.items():
        if key in ("inputs", "call"):
            value = refs.replace(value, one)
        elif key not in RESERVED and str(node.get("type", "")).startswith("ops."):
            value = refs.replace(value, lambda s: one(s) if refs.base(s) in known else None)
        out[key] = value
    return out


@dataclass
class _Graph:
    """One graph's nodes (inputs always written) and what the window search needs of them."""

    nodes: list[dict[str, Any]]
    inputs: list[str]
    outputs: set[str]
    blocked: set[str]  # names a fold must not hide (sub-model names, block uses)

    def __post_init__(self) -> None:
        self.index = {n["name"]: i for i, n in enumerate(self.nodes)}
        self.known = set(self.index) | set(self.inputs)
        position = {**{name: -1 - k for k, name in enumerate(self.inputs)}, **self.index}
        self.sigs: list[int | None] = []
        self.uses: list[list[int]] = []  # per node: positions of the nodes it reads
        self.last_user = [-1] * len(self.nodes)
        table: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            texts = _refs_of(node, self.known)
            parsed = [refs.parse(t) for t in texts]
            read = [position.get(p.base) if p else None for p in parsed]
            foldable = (
                "type" in node
                and node["name"] not in self.outputs
                and node["type"] not in self.blocked
                and all(p is not None and p.pick is None for p in parsed)
                and all(r is not None for r in read)
            )
            self.uses.append([r for r in read if r is not None])
            for r in self.uses[-1]:
                if r >= 0:
                    self.last_user[r] = max(self.last_user[r], i)
            if not foldable:
                self.sigs.append(None)
                continue
            # Argument values (even which are written) may differ between copies: they become parameters.
            call = refs.replace(node.get("call") or {}, lambda s: "<tensor>")
            sig = _key([node["type"], call])
            self.sigs.append(table.setdefault(sig, len(table)))

    def window(self, start: int, length: int) -> tuple[tuple[Any, ...], list[str]] | None:
        """(what copies of this window share, the tensors it reads from before it) when the window is
        self-contained: at most MAX_ENTRIES tensors come in, only its last node is read after it."""
        end = start + length
        outside: list[int] = []
        key = []
        for i in range(start, end):
            if self.sigs[i] is None or (i < end - 1 and self.last_user[i] >= end):
                return None
            wiring = []
            for r in self.uses[i]:
                if r >= start:
                    wiring.append(i - r)
                else:
                    if r not in outside:
                        outside.append(r)
                    wiring.append(-1 - outside.index(r))
            key.append((self.sigs[i], tuple(wiring)))
        if not 1 <= len(outside) <= MAX_ENTRIES:
            return None
        return tuple(key), [self.inputs[-1 - r] if r < 0 else self.nodes[r]["name"] for r in outside]

    def entries(self, start: int, length: int) -> list[str]:
        found = self.window(start, length)
        return found[1] if found else []


def _instances(graph: _Graph) -> list[tuple[tuple[int, int, int], int, list[int]]]:
    """Candidate groups: ((saved lines, named coherently, -first start), length, starts), best first."""
    n = len(graph.nodes)
    candidates = []
    for length in range(2, min(MAX_LENGTH, n // 2) + 1):
        groups: dict[tuple[Any, ...], list[int]] = {}
        for start in range(n - length + 1):
            found = graph.window(start, length)
            if found is not None:
                groups.setdefault(found[0], []).append(start)
        for starts in groups.values():
            chosen: list[int] = []
            for s in starts:
                if not chosen or s >= chosen[-1] + length:
                    chosen.append(s)
            if len(chosen) < 2:
                continue
            saved = len(chosen) * length - length - len(chosen)
            # Ties (a window shifted by a node often repeats as often) go to copies whose names agree most.
            coherent = sum(len(_prefix([graph.nodes[s + k]["name"] for k in range(length)])) for s in chosen)
            if saved > 0:
                candidates.append(((saved, coherent, -chosen[0]), length, chosen))
    candidates.sort(key=lambda c: c[0], reverse=True)
    return candidates


def _prefix(names: list[str]) -> str:
    """The common prefix of the names, cut after its last `_` or `.` ('' when there is none)."""
    first = names[0]
    k = 0
    while k < len(first) and all(len(m) > k and m[k] == first[k] for m in names):
        k += 1
    cut = max(first.rfind("_", 0, k), first.rfind(".", 0, k))
    return first[: cut + 1] if cut > 0 else ""


def _inner_names(graph: _Graph, starts: list[int], length: int) -> list[str]:
    """Names of the block's nodes: what follows each copy's common prefix (`conv2_block1_1_conv` -> `conv_1`)."""
    named = [[graph.nodes[s + k]["name"] for k in range(length)] for s in starts]
    first = max(named, key=lambda names: len(_prefix(names)))  # the copy whose names agree the most
    cut = len(_prefix(first))
    rest = [m[cut:] for m in first]
    out: list[str] = []
    for k, name in enumerate(rest):
        m = re.match(r"^(\d+)_(.+)$", name)
        if m:  # names start with a letter: `1_conv` -> `conv_1`
            name = f"{m.group(2)}_{m.group(1)}"
        if not _NAME.match(name) or name in out or name in ("x",):
            name = f"{snake_case(str(graph.nodes[starts[0] + k]['type']).split(':')[-1].split('.')[-1])}_{k}"
        out.append(name)
    return out


_MISSING = object()


def _default(type_: str, key: str) -> Any:
    """The constructor default of an argument one copy leaves out (`_MISSING` when unknown)."""
    entry = catalog.entry("layers", type_) if not type_.startswith("ops.") else catalog.entry("ops", type_[4:])
    param = (entry or {}).get("params", {}).get(key)
    if param is None or param.get("required"):
        return _MISSING
    value = json.loads(_key(param["default"]))
    if isinstance(value, list) and value and len(set(map(_key, value))) == 1 and isinstance(value[0], int):
        return value[0]  # strides=(1, 1) as the recipe writes it: 1
    return value


def takes_no_inputs(type_: str, arguments: Iterable[str]) -> bool:
    """An op whose first argument is written as a keyword (`ops.subtract` with `x1: 3.0`): no `inputs`."""
    entry = catalog.entry("ops", type_[4:]) if type_.startswith("ops.") else None
    order = entry["order"] if entry else []
    return bool(order) and order[0] in arguments


class Folder:
    """Folds the graphs of one recipe, collecting the blocks they share one namespace for."""

    def __init__(self, taken: set[str]) -> None:
        self.blocks: dict[str, dict[str, Any]] = {}
        self.taken = set(taken)  # node, input, sub-model and block names of the whole recipe

    def fold(self, graph: dict[str, Any], blocked: set[str]) -> dict[str, Any]:
        """The graph section with its repeated structure folded (the input is left as it is)."""
        nodes = [dict(n) for n in graph["layers"]]
        inputs = list(graph["inputs"])
        previous = inputs[0] if len(inputs) == 1 else None
        for node in nodes:  # every node's inputs written, so windows can be compared and cut anywhere
            if "inputs" not in node and previous is not None and not takes_no_inputs(str(node.get("type", "")), node):
                node["inputs"] = previous
            previous = node["name"]
        outputs = set(graph.get("outputs") or [nodes[-1]["name"]])
        outputs = {refs.base(o) for o in outputs}
        while True:
            state = _Graph(nodes, inputs, outputs, blocked | set(self.blocks))
            best = next((c for c in _instances(state) if self.try_fold(state, c[1], c[2]) is not None), None)
            if best is None:
                break
            nodes = self.try_fold(state, best[1], best[2], commit=True) or nodes
        out = dict(graph)
        previous = inputs[0] if len(inputs) == 1 else None
        layers = []
        for node in nodes:
            if node.get("inputs") == previous and previous is not None:
                node = {k: v for k, v in node.items() if k != "inputs"}
            layers.append(node)
            previous = node["name"]
        out["layers"] = layers
        return out

    def try_fold(
        self, graph: _Graph, length: int, starts: list[int], *, commit: bool = False
    ) -> list[dict[str, Any]] | None:
        """The node list with the copies at `starts` replaced by block uses; None when they do not fold."""
        copies = [graph.nodes[s : s + length] for s in starts]
        params: dict[str, list[Any]] = {}
        template: list[dict[str, Any]] = []
        inner = _inner_names(graph, starts, length)
        for k in range(length):
            node = copies[0][k]
            local = {copies[0][j]["name"]: inner[j] for j in range(k)}
            local.update(zip(graph.entries(starts[0], length), ENTRY_NAMES, strict=False))
            shaped = _rename(node, local, graph.known)
            shaped["name"] = inner[k]
            keys = list(dict.fromkeys(key for c in copies for key in c[k]))
            for key in keys:
                tensor = any(refs.base(t) in graph.known for t, _ in refs.strings(node.get(key), ()))
                if key in RESERVED or (str(node["type"]).startswith("ops.") and tensor):
                    continue  # an op's tensor argument: wiring, compared by the window's key
                values = [c[k].get(key, _MISSING) for c in copies]
                if any(v is _MISSING for v in values):
                    default = _default(str(node["type"]), key)
                    if default is _MISSING:
                        return None
                    values = [default if v is _MISSING else v for v in values]
                if len({_key(v) for v in values}) == 1:
                    continue
                shaped[key] = self.param(params, key, values)
                if shaped[key] is None:
                    return None
            if k > 0 and shaped.get("inputs") == inner[k - 1]:
                del shaped["inputs"]
            if k == 0 and shaped.get("inputs") == "x":
                del shaped["inputs"]
            template.append(shaped)
        if len(params) > MAX_PARAMS:
            return None
        if not commit:
            return []
        block = self.new_name(_block_stem(graph, starts, length))
        defaults = {p: Counter(_key(v) for v in vs).most_common(1)[0][0] for p, vs in params.items()}
        spec: dict[str, Any] = {}
        if len(graph.entries(starts[0], length)) > 1:
            spec["inputs"] = list(ENTRY_NAMES[: len(graph.entries(starts[0], length))])
        if params:
            spec["params"] = {p: json.loads(d) for p, d in defaults.items()}
        spec["layers"] = template
        self.blocks[block] = spec
        return self.replace(graph, block, length, starts, params, defaults)

    def param(self, params: dict[str, list[Any]], key: str, values: list[Any]) -> str | None:
        """`${name}` (or `${name * m}`) standing for `values` across the copies; a new parameter if needed."""
        if not _IDENTIFIER.match(key):
            return None
        for name, known in params.items():
            if [_key(v) for v in known] == [_key(v) for v in values]:
                return f"${{{name}}}"
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        for name, known in params.items():
            if ints and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in known):
                ratios = {v // u if v % u == 0 else None for u, v in zip(known, values, strict=True)}
                if len(ratios) == 1 and None not in ratios and 1 not in ratios:
                    return f"${{{name} * {ratios.pop()}}}"
        name, k = key, 1
        while name in params or name in ("index", "count"):
            k += 1
            name = f"{key}_{k}"
        params[name] = values
        return f"${{{name}}}"

    def new_name(self, stem: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_") or "block"
        if not stem[0].isalpha():
            stem = f"b{stem}"
        name, k = stem, 1
        while name in self.taken or catalog.entry("layers", name) is not None:
            k += 1
            name = f"{stem}_{k}"
        self.taken.add(name)
        return name

    def replace(
        self,
        graph: _Graph,
        block: str,
        length: int,
        starts: list[int],
        params: dict[str, list[Any]],
        defaults: dict[str, str],
    ) -> list[dict[str, Any]]:
        # Copies that follow each other, each reading the one before, become one use with `repeat`.
        runs: list[list[int]] = []
        for c, s in enumerate(starts):
            prev = starts[c - 1] if c else None
            last = prev + length - 1 if prev is not None else None
            if (
                runs
                and prev is not None
                and s == prev + length
                and graph.entries(s, length) == [graph.nodes[last]["name"]]
                and graph.last_user[last] < s + length
            ):
                runs[-1].append(c)
            else:
                runs.append([c])
        mapping: dict[str, str] = {}
        uses: dict[int, dict[str, Any]] = {}
        for run in runs:
            first, last = starts[run[0]], starts[run[-1]]
            names = [graph.nodes[starts[c]]["name"] for c in run]
            stem = _prefix([graph.nodes[first + k]["name"] for k in range(length)]) or names[0]
            if len(run) > 1:
                stem = _prefix([*names, graph.nodes[last + length - 1]["name"]]) or stem
            use_name = self.new_name(stem.rstrip("_.") or block)
            entries = graph.entries(first, length)
            use: dict[str, Any] = {
                "name": use_name,
                "type": block,
                "inputs": entries[0] if len(entries) == 1 else entries,
            }
            per_copy = [{p: params[p][c] for p in params} for c in run]
            common = {p: v for p, v in per_copy[0].items() if all(_key(pc[p]) == _key(v) for pc in per_copy)}
            use.update({p: v for p, v in common.items() if _key(v) != defaults[p]})
            varying = [{p: v for p, v in pc.items() if p not in common} for pc in per_copy]
            if len(run) > 1:
                use["repeat"] = varying if any(varying) else len(run)
            uses[first] = use
            mapping[graph.nodes[last + length - 1]["name"]] = use_name
        ends = {starts[run[0]]: starts[run[-1]] + length for run in runs}
        out: list[dict[str, Any]] = []
        end = -1
        for i, node in enumerate(graph.nodes):
            if i in uses:
                out.append(_rename(uses[i], mapping, graph.known))
                end = ends[i]
            if i >= end:
                out.append(_rename(node, mapping, graph.known))
        return out


def _block_stem(graph: _Graph, starts: list[int], length: int) -> str:
    """A block's name from its copies' names with the copy numbers taken out (`conv2_block1_` -> `conv_block`)."""
    stem = _prefix([graph.nodes[starts[0] + k]["name"] for k in range(length)])
    stem = re.sub(r"\d+", "", stem).strip("_.")
    stem = re.sub(r"_+", "_", stem)
    return stem or snake_case(str(graph.nodes[starts[0]]["type"]).split(":")[-1].split(".")[-1])


def fold_document(document: dict[str, Any]) -> dict[str, Any]:
    """The imported recipe document with `blocks:` folded out of its main graph and sub-models."""
    model = document["model"]
    submodels = model.get("submodels") or {}
    taken = set(model["inputs"]) | set(submodels)
    for graph in (model, *submodels.values()):
        taken |= {n["name"] for n in graph["layers"]} | set(graph["inputs"])
    folder = Folder(taken)
    blocked = set(submodels)
    new_subs = {name: folder.fold(sub, blocked) for name, sub in submodels.items()}
    new_model = folder.fold(model, blocked)
    if new_subs:
        new_model["submodels"] = new_subs
    if not folder.blocks:
        return document
    out: dict[str, Any] = {}
    for key, value in document.items():
        if key == "model":
            out["blocks"] = folder.blocks
            out["model"] = new_model
        else:
            out[key] = value
    return out
