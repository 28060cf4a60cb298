"""Renderings of a graph: the summary rows (rich table / JSON), Graphviz dot and Mermaid.

dot and Mermaid need only the resolved graph (no TensorFlow); the summary needs the built model for
output shapes and parameter counts, and its totals equal `model.count_params()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dlrun.graph import refs
from dlrun.graph.check import Graph, Node

if TYPE_CHECKING:
    import keras
    from rich.table import Table

    from dlrun.graph.build import Built


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


def summary_rows(graph: Graph, built: Built, *, expand: bool = False) -> list[Row]:
    """Rows for every node (blocks folded into one row each unless `expand`)."""
    rows: list[Row] = [
        Row(name, "Input", _shape(built.tensors[name]), 0, [], [f"dtype {spec.dtype}"])
        for name, spec in graph.inputs.items()
    ]
    import keras  # the model is built: Keras is loaded

    seen_layers: set[int] = set()
    for node in graph.nodes:
        layer = built.layers[node.name]
        marks: list[str] = [f"shared with {node.share}"] if node.kind == "share" else []
        if not isinstance(layer, keras.layers.Layer):  # a keras.ops function (an op node, or one sharing it)
            type_ = f"ops.{node.type}" + (" (shared)" if node.kind == "share" else "")
            rows.append(Row(node.name, type_, _shape(built.tensors[node.name]), 0, list(node.refs), marks))
            continue
        first_use = id(layer) not in seen_layers
        seen_layers.add(id(layer))
        params = layer.count_params() if first_use and layer.built else 0
        if node.kind != "share" and not first_use:
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


def totals(model: keras.Model) -> dict[str, int]:
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


def render_table(rows: list[Row], total: dict[str, int], graph: Graph) -> Table:
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


def shared_with(graph: Graph) -> dict[str, str]:
    """Nodes that call another node's layer again (same weights): node -> the node that made the layer. A
    `share:` node, or a later call of the same sub-model."""
    out: dict[str, str] = {}
    first_call: dict[str, str] = {}
    for n in graph.nodes:
        if n.kind == "share" and n.share is not None:
            out[n.name] = refs.base(graph.resolve(n.share))
        elif n.kind == "submodel":
            out.update({n.name: first_call[n.type]} if n.type in first_call else {})
            first_call.setdefault(n.type, n.name)
    return out


def known_shapes(graph: Graph, declared: dict[str, list[int | None]] | None = None) -> dict[str, str]:
    """Shapes known without building, batch axis first: the inputs', and the outputs' a recipe's
    `expect.output_shapes` declares (`declared`)."""
    shapes = {name: str((None, *spec.shape)) for name, spec in graph.inputs.items() if isinstance(spec.shape, list)}
    for out, shape in (declared or {}).items():
        shapes[f"output:{out}"] = str(tuple(shape))
    return shapes


def _dot_label(name: str, kind: str, shape: str | None) -> str:
    """`name\\nkind\\nshape`: dot's line breaks, written as dot reads them."""
    return "\\n".join([name, kind, *([shape] if shape else [])])


def _shape_suffix(shape: str | None) -> str:
    return f" {shape}" if shape else ""


def to_dot(graph: Graph, shapes: dict[str, str] | None = None) -> str:
    """Graphviz dot text of the graph (blocks as clusters); a shared layer's node is dashed, with a dotted
    `shared` edge from the node that owns the weights; `shapes` (see `known_shapes`) shown where known."""
    shapes = shapes or {}
    shared = shared_with(graph)
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    for name in graph.inputs:
        lines.append(f'  "{name}" [shape=ellipse, label="{_dot_label(name, "Input", shapes.get(name))}"];')
    clusters: dict[str, list[str]] = {}
    for n in graph.nodes:
        kind = _type(n) if n.name not in shared else f"{_type(n)} (shares {shared[n.name]})"
        style = ', style="dashed"' if n.name in shared else ""
        decl = f'"{n.name}" [label="{_dot_label(n.name, kind, shapes.get(n.name))}"{style}];'
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
    for node, owner in shared.items():
        lines.append(f'  "{owner}" -> "{node}" [style=dotted, arrowhead=none, constraint=false, label="shared"];')
    for out in graph.outputs:
        label = _dot_label(out, "Output", shapes.get(f"output:{out}"))
        lines.append(f'  "{refs.base(graph.resolve(out))}" -> "output:{out}";')
        lines.append(f'  "output:{out}" [shape=ellipse, label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mid(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def to_mermaid(graph: Graph, shapes: dict[str, str] | None = None) -> str:
    """Mermaid flowchart text of the graph (blocks as subgraphs); a shared layer's node says whose weights it
    uses, with a dotted `shared` link; `shapes` (see `known_shapes`) shown where known."""
    shapes = shapes or {}
    shared = shared_with(graph)
    lines = ["flowchart TD"]
    for name in graph.inputs:
        lines.append(f'  {_mid(name)}(["{name}: Input{_shape_suffix(shapes.get(name))}"])')
    clusters: dict[str, list[str]] = {}
    for n in graph.nodes:
        kind = _type(n) if n.name not in shared else f"{_type(n)} (shares {shared[n.name]})"
        decl = f'{_mid(n.name)}["{n.name}: {kind}{_shape_suffix(shapes.get(n.name))}"]'
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
    for node, owner in shared.items():
        lines.append(f"  {_mid(owner)} -.-|shared| {_mid(node)}")
    for out in graph.outputs:
        shape = _shape_suffix(shapes.get(f"output:{out}"))
        lines.append(f'  {_mid(refs.base(graph.resolve(out)))} --> {_mid("out_" + out)}(["{out}: Output{shape}"])')
    return "\n".join(lines) + "\n"
