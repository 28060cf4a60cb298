"""`dlrun eval RUN`: a run's model on a split -> Keras' metrics, plus a report per output as the run's
`outputs.json` says it is (classifier or regression)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.engine.artifacts import CLASSES_FILE, class_names, evaluate_and_predict, load_run
from dlrun.engine.outputs import OutputInfo, read_outputs
from dlrun.errors import RecipeError

if TYPE_CHECKING:
    pass


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
    batch = recipe.eval.batch_size or recipe.train.batch_size
    evaluation = evaluate_and_predict(
        model, prepared, chosen, graph.outputs, list(graph.inputs), batch, trained.importer.custom_objects()
    )
    metrics = evaluation.metrics
    classes = run.read_json(CLASSES_FILE) or class_names(recipe.data, loaded.base_dir, prepared)  # older runs
    infos = read_outputs(run.path, loaded, model, classes, prepared.stats)
    reports = prediction_reports(infos, evaluation.predicted, evaluation.targets)
    from dlrun.verbs.plot import save_plots

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
    infos: dict[str, OutputInfo], predicted: dict[str, np.ndarray], targets: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per output, as `infos` (the run's outputs.json) says it is: a classification report (per-class P/R/F1,
    confusion matrix, by class name) or a regression report in the target's original units."""
    from dlrun.verbs.report import classification_report, regression_report

    reports = {}
    for o, info in infos.items():
        y = targets[o]
        if info.classifier:
            reports[o] = classification_report(y, info.probabilities(predicted[o]), info.classes)
        else:
            reports[o] = regression_report(info.original_units(y), info.original_units(predicted[o]))
            reports[o]["units"] = "original (declared target scaling undone)" if info.multiply else "as trained"
    return reports
