"""`dlrun validate`: every independent error in a recipe at once, then the lint warnings (no TensorFlow).

`load_recipe` stops at the first error, which is what every other verb wants. Here the same checks run
so that independent mistakes are all reported, in file order, capped at `MAX_ERRORS`:
- every schema (pydantic) error, one per place (the alternatives of a union at one place count once);
- every node's argument names and values (Keras layers and applications, after block substitution);
- the first graph error (references, cycles, outputs) and the first compile/callback/data error.
Still first-only: YAML syntax and loading, `extends`, `--set` parsing, `${}` interpolation, an unknown key
(it hides the other errors of its own section), and block expansion (it hides that graph's node errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlrun.errors import RecipeError
from dlrun.graph import catalog
from dlrun.graph.lint import Finding, lint
from dlrun.recipe.compose import LoadedRecipe, compose
from dlrun.recipe.load import Document, KeyPath, load_file
from dlrun.recipe.locate import to_recipe_error
from dlrun.recipe.schema import LayerNode, Recipe

MAX_ERRORS = 20

# What validate cannot know: it needs Keras' shape inference (`check`, `summary`) or the data (`train`).
FOUND_LATER = (
    "Shapes, by `check` and `summary` (Keras builds the model): merging tensors of different shapes (`Add`), "
    "a layer given a tensor of the wrong rank (`Conv2D` on a flat input), a `Reshape` that changes the size, "
    "and the `expect:` block (parameter counts, output shapes).",
    "The data, by `train`, `cv` and `eval` (the files are read): missing files, columns or keys, labels "
    "outside `one_hot: N` or `classes:`, targets whose width differs from the output's units, a "
    "`class_weight` naming a class the labels lack, text/image folders without classes.",
    "Custom code (`module:Name`), when imported (`--trust` or `imports:`).",
)


@dataclass
class Report:
    """What validate found: errors (file order, capped), lint findings, and the recipe when it loaded."""

    errors: list[RecipeError] = field(default_factory=list)
    more: int = 0
    findings: list[Finding] = field(default_factory=list)
    loaded: LoadedRecipe | None = None


class _Errors:
    """A subset of a ValidationError's errors, shaped like one for `to_recipe_error`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self._errors = errors

    def errors(self, include_url: bool = False) -> list[dict[str, Any]]:
        return self._errors


def _is_tag(part: Any) -> bool:
    """A pydantic union member or validator tag in an error's `loc` (not a key of the document)."""
    return isinstance(part, str) and (
        "[" in part or part[:1].isupper() or part.startswith("function-") or part in ("int", "str", "float", "bool")
    )


def _anchor(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The place a mistake was made: the `loc` up to its first union tag (alternatives share it)."""
    for i, part in enumerate(loc):
        if _is_tag(part):
            return loc[:i]
    return loc


def schema_errors(exc: ValidationError, doc: Document) -> list[RecipeError]:
    """One located error per place the schema refused."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for err in exc.errors(include_url=False):
        groups.setdefault(_anchor(tuple(err["loc"])), []).append(err)
    return [to_recipe_error(_Errors(group), doc) for group in groups.values()]  # type: ignore[arg-type]


def _check_node(doc: Document, type_: str, kwargs: dict[str, Any], path: KeyPath, out: list[RecipeError]) -> None:
    from dlrun.graph.check import APPLICATION_PREFIX, check_arguments

    try:
        if type_.startswith(APPLICATION_PREFIX):
            entry = catalog.entry("applications", type_[len(APPLICATION_PREFIX) :])
            if entry is not None:
                app_kwargs = {k: v for k, v in kwargs.items() if k not in ("trainable", "input_tensor", "name")}
                check_arguments(doc, type_, entry, app_kwargs, path, layer=False)
        elif (entry := catalog.entry("layers", type_)) is not None:
            check_arguments(doc, type_, entry, kwargs, path, layer=True)
    except RecipeError as exc:
        out.append(exc)


def _raw_node_errors(doc: Document, refused: set[KeyPath]) -> list[RecipeError]:
    """Argument errors of the nodes as written, for when the schema refused the recipe (not blocks, nor the
    nodes the schema refused as a whole: `refused`)."""
    data = doc.data
    out: list[RecipeError] = []
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return out
    blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
    subs = model.get("submodels") if isinstance(model.get("submodels"), dict) else {}
    graphs: list[tuple[KeyPath, Any]] = [(("model",), model)]
    graphs += [(("model", "submodels", k), v) for k, v in subs.items() if isinstance(v, dict)]
    for base, graph in graphs:
        layers = graph.get("layers")
        for i, node in enumerate(layers if isinstance(layers, list) else []):
            if not isinstance(node, dict) or not isinstance(node.get("type"), str):
                continue
            if node["type"] in blocks or node["type"] in subs or "share" in node or (*base, "layers", i) in refused:
                continue
            kwargs = {k: v for k, v in node.items() if k not in LayerNode.RESERVED}
            _check_node(doc, node["type"], kwargs, (*base, "layers", i), out)
    return out


def _node_errors(recipe: Recipe, doc: Document) -> list[RecipeError]:
    """Argument errors of every node after block expansion (a graph whose expansion fails is skipped)."""
    from dlrun.graph.expand import expand_nodes

    out: list[RecipeError] = []
    graphs: list[tuple[KeyPath, Any]] = [(("model",), recipe.model)]
    graphs += [(("model", "submodels", k), v) for k, v in recipe.model.submodels.items()]
    for base, spec in graphs:
        try:
            expanded, _aliases = expand_nodes(spec.layers, recipe.blocks, (*base, "layers"), doc, list(spec.inputs))
        except RecipeError:
            continue  # resolve_graph reports it
        for n in expanded:
            if n.share is None and n.type is not None and n.type not in recipe.model.submodels:
                _check_node(doc, n.type, n.kwargs, n.path, out)
    return out


def _outputs(recipe: Recipe) -> list[str] | None:
    """The model's output names when the recipe states them (explicitly, or as the last node's name)."""
    if recipe.model.outputs:
        return list(recipe.model.outputs)
    last = recipe.model.layers[-1]
    if last.name and last.type not in recipe.blocks:
        return [last.name]
    return None


def _later_errors(recipe: Recipe, doc: Document) -> list[RecipeError]:
    """The first compile error and the first callback error, checked on their own."""
    from dlrun.graph.check import check_callbacks, check_compile

    out: list[RecipeError] = []
    outputs = _outputs(recipe)
    checks = [lambda: check_callbacks(doc, recipe.train.callbacks, ("train", "callbacks"))]
    if outputs is not None:
        checks.insert(0, lambda: check_compile(doc, recipe.compile, outputs))
    for check in checks:
        try:
            check()
        except RecipeError as exc:
            out.append(exc)
    return out


def _order(errors: list[RecipeError], doc: Document) -> list[RecipeError]:
    unique: dict[str, RecipeError] = {}
    for err in errors:
        unique.setdefault(str(err), err)

    def key(err: RecipeError) -> tuple[int, int, int]:
        loc = err.location
        if loc is None:
            return (2, 0, 0)
        return (0 if loc.file == doc.file else 1, loc.line or 0, loc.column or 0)

    return sorted(unique.values(), key=key)


def diagnose(source: str | Path, overrides: list[str] | tuple[str, ...] = (), cap: int = MAX_ERRORS) -> Report:
    """Load `source` collecting every independent error; lint it when it loads."""
    from dlrun.graph.check import resolve_graph

    doc = compose(load_file(source), overrides)  # first-only: these errors leave nothing to check
    try:
        recipe = Recipe.model_validate(doc.data)
    except ValidationError as exc:
        found = schema_errors(exc, doc)
        errors = _order([*found, *_raw_node_errors(doc, {e.path for e in found})], doc)
        return Report(errors=errors[:cap], more=max(0, len(errors) - cap))
    errors: list[RecipeError] = []
    graph = None
    try:
        graph = resolve_graph(recipe, doc)
    except RecipeError as exc:
        # Only now look further (a valid recipe is checked once): every node, then compile on its own when
        # it was a node's error that stopped the graph.
        errors = [*_node_errors(recipe, doc), exc]
        if str(exc) in {str(e) for e in errors[:-1]}:
            errors += _later_errors(recipe, doc)
    if errors:
        ordered = _order(errors, doc)
        return Report(errors=ordered[:cap], more=max(0, len(ordered) - cap))
    loaded = LoadedRecipe(
        recipe=recipe, doc=doc, graph=graph, base_dir=Path(source).resolve().parent, source=str(source)
    )
    assert graph is not None  # resolve_graph raised otherwise
    return Report(findings=lint(recipe, graph), loaded=loaded)


def print_report(
    recipe: Path | None,
    overrides: list[str] | tuple[str, ...],
    *,
    json_out: bool = False,
    strict: bool = False,
    explain: str | None = None,
) -> int:
    """What `dlrun validate` prints: errors and warnings on stderr, one located line each; the last error is
    raised (the CLI prints it and exits 2). Returns the exit code when the recipe is valid."""
    import json
    import sys

    from dlrun.graph.lint import explain as explain_rule

    if explain is not None:
        print(explain_rule(explain))
        return 0
    if recipe is None:
        raise RecipeError("give a recipe file (or --explain RULE)")
    report = diagnose(recipe, overrides)
    word = "error" if strict else "warning"
    if report.errors:
        for err in report.errors[:-1]:
            print(f"error: {err}", file=sys.stderr)
        if report.more:
            print(f"error: {report.errors[-1]}", file=sys.stderr)
            raise RecipeError(f"... and {report.more} more errors (fix these first)")
        raise report.errors[-1]  # the CLI prints it like any error and exits 2
    assert report.loaded is not None
    doc = report.loaded.doc
    located = [RecipeError(f.text(), location=doc.locate(f.path), path=f.path) for f in report.findings]
    for finding in located[:-1] if strict else located:
        print(f"{word}: {finding}", file=sys.stderr)
    if strict and located:
        raise located[-1]
    graph = report.loaded.graph
    info = {
        "recipe": str(recipe),
        "valid": True,
        "name": report.loaded.recipe.name,
        "nodes": len(graph.nodes),
        "outputs": graph.outputs,
    }
    if report.findings:
        info["warnings"] = [{"rule": f.rule, "path": list(f.path), "message": f.message, "fix": f.fix}
                            for f in report.findings]  # fmt: skip
    if json_out:
        from dlrun.console import console

        console.print_json(json.dumps(info, default=str), highlight=False)
    else:
        print(f"{recipe}: ok ({info['nodes']} nodes, outputs: {', '.join(info['outputs'])})")
    return 0
