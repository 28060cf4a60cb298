"""`dlrun train`: one `RunSession`, then the run's pictures (learning curves; a confusion matrix per classifier
output, on the eval split) and the closing summary: the best epoch by the monitored metric, the total time,
the model's and the plots' paths."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.console import err_console
from dlrun.engine.display import clock
from dlrun.engine.session import RunPolicy, RunSession, TrainResult
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import Recipe

if TYPE_CHECKING:
    import keras

# Keras' MonitorCallback picks "max" for these in mode `auto` (by the metric's direction); the rest are minimised.
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2", "top_k")
_MONITORING = ("ModelCheckpoint", "EarlyStopping", "ReduceLROnPlateau")


def train_run(
    loaded: LoadedRecipe, *, extra_callbacks: list[keras.callbacks.Callback] | None = None, **policy: Any
) -> TrainResult:
    """Train the recipe once (`RunPolicy` fields as keywords), draw the run's plots, print the summary."""
    started = time.perf_counter()
    session = RunSession(loaded, RunPolicy(**policy), list(extra_callbacks or []), draw=draw_run_plots)
    result = session.run()
    if not result.run.path.exists():  # a worker other than the chief: the chief's folder holds everything
        return result
    if not session.policy.quiet:
        for line in closing_summary(loaded.recipe, result, time.perf_counter() - started):
            err_console.print(line, markup=False, highlight=False)
    return result


def draw_run_plots(session: RunSession, result: TrainResult) -> list[Path]:
    """learning_curves.png, and confusion_<output>.png for each classifier output on the eval split (from the
    predictions the session's evaluation made: the model does not run over the split again)."""
    from dlrun.engine.artifacts import CLASSES_FILE, class_names
    from dlrun.engine.data_parallel import predicts_alone
    from dlrun.engine.outputs import read_outputs
    from dlrun.verbs.evaluate import prediction_reports
    from dlrun.verbs.plot import save_plots

    loaded, prepared, run = session.loaded, session.prepared, result.run
    recipe = loaded.recipe
    split = session.policy.eval_split or recipe.eval.split
    reports: dict[str, dict[str, Any]] = {}
    # Where the model cannot predict on this process alone, `dlrun eval` draws the confusion matrix.
    if split in prepared.splits and recipe.data is not None and predicts_alone(recipe):
        classes = run.read_json(CLASSES_FILE) or class_names(recipe.data, loaded.base_dir, prepared)
        infos = read_outputs(run.path, loaded, result.model, classes, prepared.stats)
        classifiers = {o: info for o, info in infos.items() if info.classifier}
        if classifiers:
            evaluation = result.evaluation
            if evaluation is None:
                from dlrun.engine.artifacts import predict_split

                batch = recipe.eval.batch_size or recipe.train.batch_size
                predicted, targets = predict_split(
                    result.model, prepared, split, loaded.graph.outputs, list(loaded.graph.inputs), batch
                )
            else:
                predicted, targets = evaluation.predicted, evaluation.targets
            reports = prediction_reports(classifiers, predicted, targets)
    return save_plots(run.path, result.history, reports)


@dataclass(frozen=True)
class Best:
    """The best epoch by the monitored metric."""

    epoch: int
    of: int
    monitor: str
    value: float
    watched_by: str | None  # the recipe's callback that monitors it; None: dlrun's default choice


def monitored(recipe: Recipe, history: dict[str, list[float]]) -> tuple[str, str, str | None]:
    """(metric, 'min'|'max', callback): what the recipe's checkpoint/early stopping watch, else val_loss, else
    loss."""
    callbacks = [*recipe.train.callbacks, *(c for s in recipe.train.stages or [] for c in s.callbacks or [])]
    for comp in sorted(callbacks, key=lambda c: _MONITORING.index(c.type) if c.type in _MONITORING else 9):
        if comp.type in _MONITORING:
            monitor = str(comp.kwargs.get("monitor", "val_loss"))
            if monitor in history:
                mode = str(comp.kwargs.get("mode", "auto"))
                return monitor, mode if mode in ("min", "max") else _direction(monitor), comp.type
    monitor = "val_loss" if "val_loss" in history else "loss"
    return monitor, "min", None


def _direction(metric: str) -> str:
    name = metric.removeprefix("val_").lower()
    return "min" if "loss" in name or "error" in name else "max" if any(h in name for h in _HIGHER_IS_BETTER) else "min"


def best_epoch(recipe: Recipe, history: dict[str, list[float]]) -> Best | None:
    """The epoch whose monitored value is best (the first of equals), or None before any epoch finished."""
    monitor, mode, watched_by = monitored(recipe, history)
    values = history.get(monitor) or []
    epochs = history.get("epoch") or list(range(1, len(values) + 1))
    if not values:
        return None
    pick = min if mode == "min" else max
    index = pick(range(len(values)), key=lambda i: values[i])
    return Best(int(epochs[index]), int(epochs[-1]), monitor, float(values[index]), watched_by)


def closing_summary(recipe: Recipe, result: TrainResult, seconds: float) -> list[str]:
    """The lines that end a run: best epoch and its metric, total time and the model, the plots."""
    lines = []
    best = best_epoch(recipe, result.history)
    if best is not None:
        why = f" (watched by {best.watched_by})" if best.watched_by else ""
        lines.append(f"best epoch {best.epoch}/{best.of}: {best.monitor} {best.value:.4f}{why}")
    lines.append(f"done in {clock(seconds)} · model: {result.run.model}")
    if result.plots:
        lines.append("plots: " + ", ".join(str(p) for p in result.plots))
    elif importlib.util.find_spec("matplotlib") is None:
        from dlrun.verbs.plot import INSTALL

        lines.append(f"plots: none ({INSTALL} draws them)")
    return lines
