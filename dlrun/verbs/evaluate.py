"""`dlrun eval RUN`: a run's model on a split -> Keras' metrics, plus a report per output as the run's
`outputs.json` says it is (classifier or regression)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.data.prepare import Prepared
from dlrun.engine.artifacts import CLASSES_FILE, class_names, evaluate_model, load_run
from dlrun.engine.outputs import OutputInfo, read_outputs
from dlrun.errors import RecipeError

if TYPE_CHECKING:
    import keras


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
    classes = run.read_json(CLASSES_FILE) or class_names(recipe.data, loaded.base_dir, prepared)  # older runs
    infos = read_outputs(run.path, loaded, model, classes, prepared.stats)
    reports = prediction_reports(model, prepared, chosen, infos, list(graph.inputs), batch)
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
    model: keras.Model,
    prepared: Prepared,
    split: str,
    infos: dict[str, OutputInfo],
    inputs: list[str],
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """Per output, as `infos` (the run's outputs.json) says it is: a classification report (per-class P/R/F1,
    confusion matrix, by class name) or a regression report in the target's original units."""
    import numpy as np

    from dlrun.verbs.report import classification_report, regression_report

    outputs = list(infos)
    data = prepared.feed(split, inputs, outputs, batch_size, training=False)
    if data.streamed:  # predictions and targets come from the same (unshuffled) batches
        parts = [batch[1] for batch in data.pipeline.as_numpy_iterator()]
        y = {o: np.concatenate([p[o] if isinstance(p, dict) else p for p in parts]) for o in outputs}
        predicted = model.predict(data.pipeline.map(lambda *batch: batch[0]), verbose=0)
    else:
        predicted = model.predict(data.x, batch_size=batch_size, verbose=0)
        y = data.y if isinstance(data.y, dict) else {outputs[0]: data.y}
    if len(outputs) == 1:
        predicted = {outputs[0]: predicted[outputs[0]] if isinstance(predicted, dict) else predicted}
    elif isinstance(predicted, list | tuple):
        predicted = dict(zip(outputs, predicted, strict=True))
    reports = {}
    for o, info in infos.items():
        if info.classifier:
            reports[o] = classification_report(y[o], info.probabilities(predicted[o]), info.classes)
        else:
            reports[o] = regression_report(info.original_units(y[o]), info.original_units(predicted[o]))
            reports[o]["units"] = "original (declared target scaling undone)" if info.multiply else "as trained"
    return reports
