"""Evaluation: a model on a split -> metrics by name (per output for multi-output models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrun.engine.artifacts import evaluate_model, load_run
from dlrun.errors import RecipeError


def evaluate_run(
    run_path: Path, *, split: str | None = None, trust: bool = False, unsafe: bool = False
) -> dict[str, Any]:
    """Evaluate a finished run's model on its recipe's split (default: the recipe's `eval.split`)."""
    from dlrun.data.prepare import prepare

    trained = load_run(run_path, trust=trust, unsafe=unsafe)
    model, run, loaded = trained.model, trained.run, trained.loaded
    recipe = loaded.recipe
    if recipe.data is None:
        raise RecipeError("the run's recipe has no data section to evaluate on")
    prepared = prepare(recipe.data, loaded.base_dir, recipe.seed)
    chosen = split or recipe.eval.split
    if chosen not in prepared.splits:
        raise RecipeError(f"the data has no {chosen!r} split (it has: {', '.join(prepared.splits)})")
    graph = loaded.graph
    metrics = evaluate_model(
        model, prepared, chosen, graph.outputs, list(graph.inputs), recipe.eval.batch_size or recipe.train.batch_size
    )
    batch = recipe.eval.batch_size or recipe.train.batch_size
    reports = prediction_reports(model, prepared, chosen, graph.outputs, list(graph.inputs), batch)
    from dlrun.verbs.report import save_plots

    plots = save_plots(run.path, run.read_json("history.json"), reports)
    result = {
        "run": str(run_path),
        "split": chosen,
        "samples": prepared.count(chosen),
        "outputs": graph.outputs,
        "metrics": metrics,
        "reports": reports,
        "plots": [p.name for p in plots],
    }
    run.write_json("eval.json", result)
    return result


def prediction_reports(
    model: Any, prepared: Any, split: str, outputs: list[str], inputs: list[str], batch_size: int
) -> dict[str, dict[str, Any]]:
    """Per output: a classification report (per-class P/R/F1, confusion matrix) or regression report."""
    import numpy as np

    from dlrun.verbs.report import report

    x, y = prepared.feed(split, inputs, outputs, batch_size, training=False)
    if y is None:  # a tf.data pipeline: predictions and targets come from the same (unshuffled) batches
        parts = [batch[1] for batch in x.as_numpy_iterator()]
        y = {o: np.concatenate([p[o] if isinstance(p, dict) else p for p in parts]) for o in outputs}
        predicted = model.predict(x.map(lambda *batch: batch[0]), verbose=0)
    else:
        predicted = model.predict(x, batch_size=batch_size, verbose=0)
        y = y if isinstance(y, dict) else {outputs[0]: y}
    if len(outputs) == 1:
        predicted = {outputs[0]: predicted[outputs[0]] if isinstance(predicted, dict) else predicted}
    elif isinstance(predicted, list | tuple):
        predicted = dict(zip(outputs, predicted, strict=True))
    names = getattr(prepared, "classes", None) or {}
    return {o: report(y[o], predicted[o], [str(c) for c in names[o]] if names.get(o) else None) for o in outputs}
