"""`dlrun check`: prove a recipe trainable in seconds, without its data.

Builds the model, compiles it as the recipe says, and runs one forward and backward step on random
inputs shaped from `model.inputs` and random targets shaped for each output's loss; then asserts the
recipe's `expect:` block (parameter counts, output shapes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlrun.errors import RecipeError
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import Component

FREE_DIM = 8  # stands in for variable-length (null) axes


def _random_input(shape: list[int | None], dtype: str, batch: int, rng: np.random.Generator) -> np.ndarray:
    full = (batch, *[d or FREE_DIM for d in shape])
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 2, size=full).astype(dtype)
    if dtype == "string":
        return np.full(full, "a", dtype=object)
    if dtype == "bool":
        return rng.integers(0, 2, size=full).astype(bool)
    return rng.random(full, dtype=np.float32).astype(dtype)


def _loss_name(comp: Component) -> str:
    return comp.type.lower()


def _random_target(shape: tuple[int | None, ...], loss: str, batch: int, rng: np.random.Generator) -> np.ndarray:
    dims = tuple(d or FREE_DIM for d in shape[1:])
    if "sparse" in loss:
        classes = dims[-1] if dims else 2
        return rng.integers(0, classes, size=(batch, *dims[:-1])).astype("int32")
    y = rng.random((batch, *dims), dtype=np.float32)
    if "categorical" in loss and dims:
        y = np.eye(dims[-1], dtype="float32")[rng.integers(0, dims[-1], size=(batch, *dims[:-1]))]
    elif "binary" in loss or "hinge" in loss:
        y = (y > 0.5).astype("float32")
    return y


def check_recipe(loaded: LoadedRecipe, *, trust: bool = False, batch: int = 2) -> dict[str, Any]:
    """Build + compile + one `train_on_batch`; returns params, loss and output shapes."""
    from dlrun.engine.compile import compile_model, seed_everything
    from dlrun.engine.outputs import decide_outputs
    from dlrun.graph.build import build_graph
    from dlrun.graph.render import totals
    from dlrun.importer import Importer

    recipe, graph = loaded.recipe, loaded.graph
    seed_everything(recipe.seed, deterministic=False)
    importer = Importer(recipe.imports, loaded.base_dir, trust=trust)
    from dlrun.data.preprocess import shapes_from_data

    shapes_from_data(loaded, importer)  # `shape: auto` inputs: the prepared data's shapes
    model = build_graph(graph, importer, doc=loaded.doc, base_dir=loaded.base_dir)
    compile_model(model, recipe.compile, graph.outputs, importer)
    rng = np.random.default_rng(recipe.seed)
    xs = {name: _random_input(spec.shape, spec.dtype, batch, rng) for name, spec in graph.inputs.items()}
    outputs = model.outputs
    losses = recipe.compile.loss
    ys = {}
    for name, tensor in zip(graph.outputs, outputs, strict=True):
        comp = losses[name] if isinstance(losses, dict) else losses
        ys[name] = _random_target(tuple(tensor.shape), _loss_name(comp), batch, rng)
    x = xs[next(iter(xs))] if len(xs) == 1 else xs
    y = ys[graph.outputs[0]] if len(ys) == 1 else ys
    try:
        result = model.train_on_batch(x, y, return_dict=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecipeError(f"one training step on random data failed: {first}") from None
    loss = float(result["loss"])
    if not math.isfinite(loss):
        raise RecipeError(f"one training step on random data gave a non-finite loss ({loss})")
    shapes = {name: list(t.shape) for name, t in zip(graph.outputs, outputs, strict=True)}
    count = totals(model)
    report = {
        "recipe": loaded.source,
        "params": count["total"],
        "trainable_params": count["trainable"],
        "non_trainable_params": count["non_trainable"],
        "loss": loss,
        "output_shapes": shapes,
        "output_kinds": {o: info.kind for o, info in decide_outputs(loaded, model, {}).items()},  # as train saves
    }
    _assert_expectations(loaded, report)
    return report


def _assert_expectations(loaded: LoadedRecipe, report: dict[str, Any]) -> None:
    expect = loaded.recipe.expect
    if expect is None:
        return
    doc = loaded.doc
    if expect.params is not None and expect.params != report["params"]:
        raise doc.error(
            f"expected {expect.params:,} parameters, the model has {report['params']:,}", ("expect", "params")
        )
    if expect.trainable_params is not None and expect.trainable_params != report["trainable_params"]:
        raise doc.error(
            f"expected {expect.trainable_params:,} trainable parameters, the model has {report['trainable_params']:,}",
            ("expect", "trainable_params"),
        )
    for name, shape in (expect.output_shapes or {}).items():
        actual = report["output_shapes"].get(name)
        if actual is None:
            raise doc.error(
                f"expect names output {name!r}, which the model does not have", ("expect", "output_shapes", name)
            )
        if list(shape) != list(actual):
            raise doc.error(
                f"expected output {name!r} of shape {shape}, got {actual}", ("expect", "output_shapes", name)
            )
