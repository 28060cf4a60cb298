"""Block expansion and default wiring: recipe node list -> flat list of named, wired nodes.

A node whose `type` names a block is replaced by the block's nodes (once, or `repeat` times chained),
with `${...}` substituted from the block's parameters plus `index` (0-based copy number) and `count`.
Inner names become `<use>.<inner>` (`<use>.<k>.<inner>` when repeated), and the use's name stands for
the block's output. Omitted names get Keras-style automatic ones; omitted inputs take the previous node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlrun.errors import RecipeError
from dlrun.graph import catalog, refs
from dlrun.recipe.expr import ExprError, has_expression, substitute
from dlrun.recipe.load import Document, KeyPath
from dlrun.recipe.schema import BlockSpec, LayerNode
from dlrun.util import snake_case

MAX_DEPTH = 8
MAX_NODES = 20_000


@dataclass
class ExpandedNode:
    """A node after block expansion: always named; `inputs` None only when nothing precedes it."""

    name: str
    type: str | None
    share: str | None
    kwargs: dict[str, Any]
    call: dict[str, Any]
    inputs: list[str] | None
    path: KeyPath
    block: tuple[str, ...] = ()
    wired: bool = False  # `inputs` taken from the previous node, not written


def _local(value: Any, local: dict[str, str], *, every: bool) -> Any:
    """Block-local node names in references replaced by their full names; `every` string is a reference
    (a layer's `call`) or only those naming a local node (an op's arguments)."""

    def one(text: str) -> str | None:
        base = refs.base(text)
        if base in local or every:
            return refs.rename(text, lambda b: local.get(b, b))
        return None

    return refs.replace(value, one)


class _Expander:
    def __init__(self, blocks: dict[str, BlockSpec], doc: Document | None, taken: set[str]) -> None:
        self.blocks = blocks
        self.doc = doc
        self.taken = set(taken)
        self.counters: dict[str, int] = {}
        self.out: list[ExpandedNode] = []
        self.produced: set[str] = set()
        self.aliases: dict[str, str] = {}

    def err(self, message: str, path: KeyPath, *, key: bool = False) -> RecipeError:
        if self.doc is None:
            return RecipeError(message, path=path)
        return self.doc.error(message, path, key=key)

    def auto_name(self, type_: str) -> str:
        stem = snake_case(type_)
        while True:
            count = self.counters.get(stem, 0)
            self.counters[stem] = count + 1
            name = stem if count == 0 else f"{stem}_{count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def sub(self, value: Any, env: dict[str, Any] | None, path: KeyPath) -> Any:
        if env is None:
            return value
        try:
            return substitute(value, env)
        except ExprError as exc:
            raise self.err(str(exc), path) from None

    def text(self, value: str | None, env: dict[str, Any] | None, path: KeyPath) -> str | None:
        """A name-like field after substitution: must still be a non-empty string."""
        if value is None:
            return None
        out = self.sub(value, env, path)
        if not isinstance(out, str) or not out:
            raise self.err(f"{value!r} gives {out!r}; expected a non-empty string", path)
        return out

    def expand(
        self,
        nodes: list[LayerNode],
        base: KeyPath,
        *,
        env: dict[str, Any] | None,
        prefix: str,
        rename: dict[str, str],
        previous: str | None,
        block: tuple[str, ...],
        depth: int,
    ) -> str | None:
        """Append `nodes` to the output; returns the name standing for the last node's output."""
        if depth > MAX_DEPTH:
            raise self.err(f"blocks nest deeper than {MAX_DEPTH} levels (a block using itself?)", base)
        # First pass: substituted names and `when`, so references may point forward.
        prepared: list[tuple[LayerNode, KeyPath, str | None, bool]] = []
        local = dict(rename)
        for i, node in enumerate(nodes):
            path = (*base, i)
            keep = True
            if node.when is not None:
                keep = bool(self.sub(node.when, env, (*path, "when")))
                if isinstance(node.when, str) and not has_expression(node.when):
                    raise self.err("`when` takes true/false or a ${...} expression", (*path, "when"))
            name = self.text(node.name, env, (*path, "name"))
            if name is not None and prefix:
                local[name] = f"{prefix}.{name}"
            prepared.append((node, path, name, keep))
        for node, path, name, keep in prepared:
            if not keep:
                continue
            type_ = self.text(node.type, env, (*path, "type"))
            share = self.text(node.share, env, (*path, "share"))
            inputs = self.sub(node.inputs, env, (*path, "inputs"))
            wired = False
            if inputs is not None:
                inputs = [refs.rename(str(r), lambda b: local.get(b, b)) for r in inputs]
            elif previous is not None:
                inputs, wired = [previous], True
            kwargs = node.kwargs
            call = _local(self.sub(node.call, env, (*path, "call")), local, every=True)
            if type_ is not None and type_ in self.blocks:
                use = name or self.auto_name(type_)
                full = f"{prefix}.{use}" if prefix and name else use
                self.taken.add(full)
                previous = self.use_block(node, type_, full, kwargs, inputs, path, env, block, depth)
                self.aliases[full] = previous
                continue
            if node.repeat is not None:
                raise self.err("`repeat` applies to blocks only", (*path, "repeat"))
            kwargs = {key: self.sub(value, env, (*path, key)) for key, value in kwargs.items()}
            if type_ is not None and type_.startswith("ops."):
                kwargs = _local(kwargs, local, every=False)
            if name is None:
                full = self.auto_name(f"{prefix}.{snake_case(str(type_ or share))}" if prefix else str(type_ or share))
            else:
                full = local.get(name, name)
            if share is not None:
                share = local.get(share, share)
            self.out.append(ExpandedNode(full, type_, share, kwargs, call, inputs, path, block, wired))
            self.produced.add(full)
            if len(self.out) > MAX_NODES:
                raise self.err(f"the graph expands to more than {MAX_NODES} nodes", path)
            previous = full
        return previous

    def use_block(
        self,
        node: LayerNode,
        block_name: str,
        use: str,
        kwargs: dict[str, Any],
        inputs: list[str] | None,
        path: KeyPath,
        env: dict[str, Any] | None,
        block: tuple[str, ...],
        depth: int,
    ) -> str:
        spec = self.blocks[block_name]
        unknown = [k for k in kwargs if k not in spec.params]
        if unknown:
            hint = catalog.did_you_mean(unknown[0], list(spec.params))
            raise self.err(f"block {block_name!r} has no parameter {unknown[0]!r}{hint}", (*path, unknown[0]), key=True)
        repeat: Any = node.repeat
        if isinstance(repeat, str):  # `${...}` from the enclosing block's parameters
            repeat = self.sub(repeat, env or {}, (*path, "repeat"))
            if not (isinstance(repeat, int) and not isinstance(repeat, bool)) and not (
                isinstance(repeat, list) and all(isinstance(r, dict) for r in repeat)
            ):
                raise self.err(
                    f"`repeat` must give an integer or a list of mappings, got {repeat!r}", (*path, "repeat")
                )
        copies: list[dict[str, Any]]
        if repeat is None:
            copies = [{}]
        elif isinstance(repeat, int):
            if repeat < 1:
                raise self.err("`repeat` must be at least 1", (*path, "repeat"))
            if repeat > MAX_NODES:
                raise self.err(f"`repeat` must be at most {MAX_NODES}, got {repeat}", (*path, "repeat"))
            copies = [{} for _ in range(repeat)]
        else:
            copies = repeat
            for k, over in enumerate(copies):
                for key in over:
                    if key not in spec.params:
                        hint = catalog.did_you_mean(key, list(spec.params))
                        raise self.err(
                            f"block {block_name!r} has no parameter {key!r}{hint}",
                            (*path, "repeat", k, key),
                            key=True,
                        )
        if inputs is None:
            raise self.err(f"block use {use!r} has no inputs and nothing precedes it", path)
        if len(inputs) != len(spec.inputs):
            raise self.err(
                f"block {block_name!r} takes {len(spec.inputs)} input(s) ({', '.join(spec.inputs)}), got {len(inputs)}",
                (*path, "inputs"),
            )
        current = inputs
        output = use
        for k, over in enumerate(copies):
            names: dict[str, Any] = {"index": k, "count": len(copies)}
            params = {**spec.params}
            outer = {**(env or {}), **names}
            # The use's values are written in the enclosing scope: its names (a block's own parameters,
            # `index`) come before the used block's defaults, which only fill names the scope lacks.
            for key, value in kwargs.items():
                params[key] = self.sub(value, {**params, **outer}, (*path, key))
            for key, value in over.items():
                params[key] = self.sub(value, {**params, **outer}, (*path, "repeat", k, key))
            inner_env = {**params, **names}
            prefix = use if len(copies) == 1 else f"{use}.{k + 1}"
            rename = dict(zip(spec.inputs, current, strict=True))
            out_name = self.expand(
                spec.layers,
                ("blocks", block_name, "layers"),
                env=inner_env,
                prefix=prefix,
                rename=rename,
                previous=current[0],
                block=(*block, prefix),
                depth=depth + 1,
            )
            if spec.output is not None:
                where = ("blocks", block_name, "output")
                chosen = self.text(spec.output, inner_env, where)
                out_name = rename.get(chosen, f"{prefix}.{chosen}")
                out_name = self.aliases.get(out_name, out_name)  # a block use inside: the node it stands for
                if chosen not in rename and out_name not in self.produced and out_name not in self.aliases:
                    inner = [n.name[len(prefix) + 1 :] for n in self.out if n.name.startswith(f"{prefix}.")]
                    hint = catalog.did_you_mean(chosen, inner)
                    raise self.err(f"block output {chosen!r} is not a node of block {block_name!r}{hint}", where)
            output = out_name or current[0]
            if len(copies) > 1:
                self.aliases[prefix] = output
            current = [output, *list(current[1:])] if len(spec.inputs) > 1 else [output]
        return output


def expand_nodes(
    nodes: list[LayerNode],
    blocks: dict[str, BlockSpec],
    base: KeyPath,
    doc: Document | None,
    input_names: list[str],
) -> tuple[list[ExpandedNode], dict[str, str]]:
    """Expand blocks and fill names/inputs; returns the flat node list and block-name aliases."""
    explicit = {n.name for n in nodes if n.name and not has_expression(n.name)}
    expander = _Expander(blocks, doc, explicit | set(input_names))
    previous = input_names[0] if len(input_names) == 1 else None
    expander.expand(nodes, base, env=None, prefix="", rename={}, previous=previous, block=(), depth=0)
    return expander.out, expander.aliases
