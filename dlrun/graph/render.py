"""Renderings of a graph: the summary rows (rich table / JSON), Graphviz dot and Mermaid.

dot and Mermaid need only the resolved graph (no TensorFlow); the summary needs the built model for
output shapes and parameter counts, and its totals equal `model.count_params()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dlrun.graph import refs
from dlrun.graph.check import Graph, Node


@dataclass
class Row:
    """One line of the summary."""

    name: str
    type: str
    output_shape: str
    params: int
    inputs: list[str]
    marks: list[str] = field(default_factory=list)
    nodes: int = 1


def _shape(tensor: Any) -> str:
    if isinstance(tensor, list | tuple):
        return ", ".join(_shape(t) for t in tensor)
    return str(tuple(tensor.shape)).replace("None", "None")


def _count(weights: list[Any]) -> int:
    total = 0
    for w in weights:
        n = 1
        for d in w.shape:
            n *= int(d)
        total += n
    return total


def summary_rows(graph: Graph, built: Any, *, expand: bool = False) -> list[Row]:
    """Rows for every node (blocks folded into one row each unless `expand`)."""
    rows: list[Row] = [
        Row(name, "Input", _shape(built.tensors[name]), 0, [], [f"dtype {spec.dtype}"])
        for name, spec in graph.inputs.items()
    ]
    seen_layers: set[int] = set()
    for node in graph.nodes:
        if node.kind == "op":  # a keras.ops function: no layer, no weights
            rows.append(Row(node.name, f"ops.{node.type}", _shape(built.tensors[node.name]), 0, list(node.refs)))
            continue
        layer = built.layers[node.name]
        marks: list[str] = []
        first_use = id(layer) not in seen_layers
        seen_layers.add(id(layer))
        params = layer.count_params() if first_use and layer.built else 0
        if node.kind == "share":
            marks.append(f"shared with {node.share}")
        elif not first_use:
            marks.append("shared")
        if node.kind == "submodel":
            marks.append(f"nested model {node.type}")
        if node.kind == "application":
            marks.append(f"keras.applications ({'trainable' if layer.trainable else 'frozen'})")
        type_ = node.type if node.kind != "share" else f"{node.type} (shared)"
        rows.append(Row(node.name, type_, _shape(built.tensors[node.name]), params, list(node.refs), marks))
    if expand:
        return rows
    return _fold(rows, graph)


def _fold(rows: list[Row], graph: Graph) -> list[Row]:
    """Collapse the rows of each top-level block use into one row."""
    block_of = {n.name: n.block[0].split(".")[0] if n.block else None for n in graph.nodes}
    folded: list[Row] = []
    current: Row | None = None
    current_block: str | None = None
    for row in rows:
        block = block_of.get(row.name)
        if block is None:
            current, current_block = None, None
            folded.append(row)
            continue
        if block != current_block:
            copies = sorted({n.block[0] for n in graph.nodes if n.block and n.block[0].split(".")[0] == block})
            inside = {n.name for n in graph.nodes if block_of.get(n.name) == block}
            outer_inputs = [i for i in row.inputs if refs.base(i) not in inside]
            type_ = f"block x{len(copies)}" if len(copies) > 1 else "block"
            current = Row(block, type_, row.output_shape, 0, outer_inputs, [], 0)
            current_block = block
            folded.append(current)
        assert current is not None
        current.params += row.params
        current.output_shape = row.output_shape
        current.nodes += 1
        for mark in row.marks:
            if mark not in current.marks:
                current.marks.append(mark)
    for row in folded:
        if row.type.startswith("block"):
            row.marks.insert(0, f"{row.nodes} layers (--expand)")
    return folded


def totals(model: Any) -> dict[str, int]:
    """Trainable / non-trainable / total parameter counts of a built model."""
    trainable = _count(model.trainable_weights)
    non_trainable = _count(model.non_trainable_weights)
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}


def rows_as_json(rows: list[Row], total: dict[str, int], graph: Graph) -> dict[str, Any]:
    """The summary as plain data for `--json`."""
    return {
        "model": graph.name,
        "inputs": list(graph.inputs),
        "outputs": graph.outputs,
        "layers": [asdict(r) for r in rows],
        "params": total,
    }


def render_table(rows: list[Row], total: dict[str, int], graph: Graph) -> Any:
    """A rich Table of the summary."""
    from rich.table import Table

    table = Table(title=f"{graph.name}", title_justify="left", show_lines=False)
    for header, justify in (
        ("layer", "left"),
        ("type", "left"),
        ("output shape", "left"),
        ("params", "right"),
        ("inputs", "left"),
        ("", "left"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.name, r.type, r.output_shape, f"{r.params:,}", ", ".join(r.inputs), "; ".join(r.marks))
    table.caption = (
        f"total {total['total']:,} params · trainable {total['trainable']:,} · "
        f"non-trainable {total['non_trainable']:,} · outputs: {', '.join(graph.outputs)}"
    )
    table.caption_justify = "left"
    return table


def _type(node: Node) -> str:
    return f"ops.{node.type}" if node.kind == "op" else node.type


def _edges(graph: Graph) -> list[tuple[str, str]]:
    edges = [(refs.base(graph.resolve(src)), n.name) for n in graph.nodes for src in n.refs]
    return list(dict.fromkeys(edges))


def to_dot(graph: Graph) -> str:
    """Graphviz dot text of the graph (blocks as clusters)."""
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    for name in graph.inputs:
        lines.append(f'  "{name}" [shape=ellipse, label="{name}\\nInput"];')
    clusters: dict[str, list[str]] = {}
    for n in graph.nodes:
        style = ', style="dashed"' if n.kind == "share" else ""
        decl = f'"{n.name}" [label="{n.name}\\n{_type(n)}"{style}];'
        if n.block:
            clusters.setdefault(n.block[0], []).append(decl)
        else:
            lines.append(f"  {decl}")
    for i, (block, decls) in enumerate(clusters.items()):
        lines.append(f'  subgraph cluster_{i} {{ label="{block}"; style=rounded;')
        lines += [f"    {d}" for d in decls]
        lines.append("  }")
    for src, dst in _edges(graph):
        lines.append(f'  "{src}" -> "{dst}";')
    for out in graph.outputs:
        lines.append(f'  "{refs.base(graph.resolve(out))}" -> "output:{out}";')
        lines.append(f'  "output:{out}" [shape=ellipse, label="{out}\\nOutput"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mid(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def to_mermaid(graph: Graph) -> str:
    """Mermaid flowchart text of the graph (blocks as subgraphs)."""
    lines = ["flowchart TD"]
    for name in graph.inputs:
        lines.append(f'  {_mid(name)}(["{name}: Input"])')
    clusters: dict[str, list[str]] = {}
    for n in graph.nodes:
        decl = f'{_mid(n.name)}["{n.name}: {_type(n)}"]'
        if n.block:
            clusters.setdefault(n.block[0], []).append(decl)
        else:
            lines.append(f"  {decl}")
    for block, decls in clusters.items():
        lines.append(f'  subgraph {_mid(block)}["{block}"]')
        lines += [f"    {d}" for d in decls]
        lines.append("  end")
    for src, dst in _edges(graph):
        lines.append(f"  {_mid(src)} --> {_mid(dst)}")
    for out in graph.outputs:
        lines.append(f'  {_mid(refs.base(graph.resolve(out)))} --> {_mid("out_" + out)}(["{out}: Output"])')
    return "\n".join(lines) + "\n"
