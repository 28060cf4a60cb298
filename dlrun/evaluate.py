"""Evaluation: a model on a split -> metrics by name (per output for multi-output models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrun.errors import RecipeError


def evaluate_model(
    model: Any, prepared: Any, split: str, outputs: list[str], inputs: list[str], batch_size: int
) -> dict[str, float]:
    """`model.evaluate` on `split`, returned as `{metric_name: value}` (Keras' own names).

    Not for a model that keras.distribution splits over devices: evaluate a local copy (train.data_parallel)."""
    x, y = prepared.feed(split, inputs, outputs, batch_size, training=False)
    result = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


def load_run_model(path: Path, custom_objects: dict[str, Any], *, unsafe: bool = False) -> Any:
    """Load a `.keras` file with Keras' safe mode unless `unsafe` (Lambda layers carry code)."""
    import keras

    import dlrun.data.layers  # noqa: F401 (registers dlrun's preprocessing layers, e.g. FillMissing, for loading)
    from dlrun.backend import torch_layers_accept_dotted_names
    from dlrun.trust import check_keras_version, model_load_error

    torch_layers_accept_dotted_names()
    check_keras_version(keras.__version__, unsafe=unsafe)  # older Keras: known safe-mode bypasses
    try:
        model = keras.saving.load_model(str(path), custom_objects=custom_objects, safe_mode=not unsafe)
    except (ValueError, TypeError, OSError) as exc:
        if (user := model_load_error(path, exc)) is not None:  # truncated, corrupt, or custom code not imported
            raise user from None
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise RecipeError(
                f"{path.name} contains a Lambda layer with serialized Python code; refused in safe mode "
                "(pass --unsafe only if you trust where the file came from)"
            ) from None
        hint = ""
        if "repeated term" in text or "vocab size" in text:
            hint = (
                "; the saved vocabulary of a StringLookup/TextVectorization layer has terms with line breaks or "
                "empty strings, which Keras' vocabulary file cannot hold: retrain the run with this dlrun (it "
                "keeps vocabularies in the model config)"
            )
        raise RecipeError(f"cannot load {path}: {text or type(exc).__name__}{hint}") from None  # Keras' whole cause
    if keras.backend.backend() == "torch" and getattr(model, "steps_per_execution", 1) > 1:
        # Trained on tensorflow/jax with several steps per call (the 'auto' default); Keras' torch trainer
        # runs one step per call only, and the number of steps per call does not change any result.
        model.steps_per_execution = 1
    return model


def load_run_for_inference(run_path: Path, *, trust: bool = False, unsafe: bool = False) -> tuple[Any, Any]:
    """A finished run's model (custom components imported under the recipe's allow-list) and its RunDir."""
    model, run, _ = _load_run(run_path, trust=trust, unsafe=unsafe)
    return model, run


def _load_run(run_path: Path, *, trust: bool, unsafe: bool) -> tuple[Any, Any, Any]:
    """(model, RunDir, LoadedRecipe) of a finished run."""
    from dlrun.backend import quiet_native_startup
    from dlrun.recipe.compose import load_recipe
    from dlrun.train.rundir import RunDir
    from dlrun.trust import artifact_importer

    run = RunDir.open(run_path)
    if not run.model.is_file():
        raise RecipeError(f"{run_path} has no model.keras (training did not finish?)")
    with quiet_native_startup():
        import keras  # noqa: F401  (loaded here, its start-up lines hidden)

    loaded = load_recipe(run.recipe)
    importer = artifact_importer(run.path, loaded, trust=trust)  # verifies integrity.json; no code without --trust
    for ref in _custom_refs(loaded):
        importer.load(ref)
    return load_run_model(run.model, importer.custom_objects(), unsafe=unsafe), run, loaded


def evaluate_run(
    run_path: Path, *, split: str | None = None, trust: bool = False, unsafe: bool = False
) -> dict[str, Any]:
    """Evaluate a finished run's model on its recipe's split (default: the recipe's `eval.split`)."""
    from dlrun.data.prepare import prepare

    model, run, loaded = _load_run(run_path, trust=trust, unsafe=unsafe)
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
    from dlrun.report import save_plots

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

    from dlrun.report import report

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


def _custom_refs(loaded: Any) -> list[str]:
    """Every import path the recipe uses (layers, losses, metrics), so a saved model can be loaded."""
    refs = [n.type for n in loaded.graph.nodes if n.kind == "custom"]
    for sub in loaded.graph.submodels.values():
        refs += [n.type for n in sub.nodes if n.kind == "custom"]
    comp = loaded.recipe.compile
    losses = comp.loss.values() if isinstance(comp.loss, dict) else [comp.loss]
    metrics = [m for ms in comp.metrics.values() for m in ms] if isinstance(comp.metrics, dict) else comp.metrics
    refs += [c.type for c in [*losses, *metrics] if ":" in c.type]
    return refs
