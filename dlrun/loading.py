"""A recipe file -> `LoadedRecipe`: composed and validated (`dlrun.recipe`), its graph resolved (`dlrun.graph`).

The one place where the two meet, above both, so that the recipe layer never imports the graph layer.
No TensorFlow import.
"""

from __future__ import annotations

from pathlib import Path

from dlrun.graph.check import resolve_graph
from dlrun.recipe.compose import LoadedRecipe, compose, validate_document
from dlrun.recipe.load import load_file


def load_recipe(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read, compose, validate and statically check a recipe file (no TensorFlow import)."""
    doc = compose(load_file(source), overrides)
    recipe = validate_document(doc)
    graph = resolve_graph(recipe, doc)
    return LoadedRecipe(recipe=recipe, doc=doc, graph=graph, base_dir=Path(source).resolve().parent, source=str(source))
