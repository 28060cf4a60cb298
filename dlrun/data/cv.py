"""`dlrun cv RECIPE --folds K`: K-fold cross-validation of a recipe.

The recipe's training pool (its `train` split after slices and `test_split`; `validation_split` is not
applied) is cut into K seeded folds, stratified when `data.stratify` is on. Each fold trains a fresh
model (same seed, same stages, preprocessing adapted on that fold's training part only) and is scored on
the held-out fold; the report gives every metric's per-fold values, mean and standard deviation
(population, ddof=0). The test split is not touched. Callbacks are not used (there is no validation data
to monitor, and nothing is checkpointed); the report goes to `runs/<name>-cv/<timestamp>/cv.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import RecipeError


def cross_validate(
    loaded: Any,
    folds: int = 5,
    *,
    runs_root: Path = Path("runs"),
    trust: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train and score the recipe on each of `folds` folds; returns per-fold metrics and their mean/std."""
    import keras

    from dlrun.components import Importer
    from dlrun.console import say
    from dlrun.data.prepare import load_recorded_splits, prepare_tables, stratify_labels
    from dlrun.data.preprocess import attach_preprocessing, resolve_input_shapes
    from dlrun.data.record import describe
    from dlrun.data.splits import kfold
    from dlrun.evaluate import evaluate_model
    from dlrun.graph.build import build_graph
    from dlrun.train.fit import apply_trainable, compile_model, seed_everything
    from dlrun.train.rundir import RunDir

    recipe = loaded.recipe
    spec = recipe.data
    if spec is None:
        raise RecipeError("this recipe has no `data` section; nothing to cross-validate", path=("data",))
    graph = loaded.graph
    inputs, outputs = list(graph.inputs), list(graph.outputs)
    importer = Importer(recipe.imports, loaded.base_dir, trust=trust)
    tables, record = load_recorded_splits(spec, loaded.base_dir, recipe.seed, validation=False)
    say(describe(record), quiet=quiet)  # before any TensorFlow work
    pool = tables["train"]
    labels = stratify_labels(spec, pool)
    pairs = kfold(pool.count, folds, recipe.seed, labels)
    stages = recipe.train.stages or [None]
    batch = recipe.train.batch_size
    per_fold: list[dict[str, float]] = []
    for i, (train_idx, held_idx) in enumerate(pairs):
        keras.backend.clear_session()
        seed_everything(recipe.seed, deterministic=recipe.train.deterministic)
        prepared = prepare_tables(
            spec, {"train": pool.take(train_idx), "validation": pool.take(held_idx)}, recipe.seed, vocab_from=pool
        )
        resolve_input_shapes(loaded, prepared, importer)  # `shape: auto` inputs take the prepared data's shape
        model = build_graph(graph, importer, doc=loaded.doc, base_dir=loaded.base_dir)
        model = attach_preprocessing(model, loaded, prepared, importer)
        x, y = prepared.feed("train", inputs, outputs)
        epoch = 0
        for j, stage in enumerate(stages):
            epochs = recipe.train.epochs if stage is None else stage.epochs
            if stage is not None:
                apply_trainable(model, graph, stage.trainable, ("train", "stages", j, "trainable"))
            compile_model(
                model,
                recipe.compile,
                outputs,
                importer,
                optimizer=None if stage is None else stage.optimizer,
                loss_weights=None if stage is None else stage.loss_weights,
            )
            model.fit(
                x,
                y,
                batch_size=None if y is None else batch,
                epochs=epoch + epochs,
                initial_epoch=epoch,
                shuffle=recipe.train.shuffle,
                verbose=0,
            )
            epoch += epochs
        metrics = evaluate_model(model, prepared, "validation", outputs, inputs, recipe.eval.batch_size or batch)
        per_fold.append(metrics)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        say(f"fold {i + 1}/{folds}: {len(train_idx)} train, {len(held_idx)} held out: {shown}", quiet=quiet)
    names = list(per_fold[0])
    summary = {
        name: {
            "mean": float(np.mean([m[name] for m in per_fold])),
            "std": float(np.std([m[name] for m in per_fold])),
            "folds": [m[name] for m in per_fold],
        }
        for name in names
    }
    run = RunDir.create(runs_root, f"{recipe.name}-cv")
    result = {
        "recipe": loaded.source,
        "folds": folds,
        "stratified": labels is not None,
        "samples": pool.count,
        "seed": recipe.seed,
        "per_fold": per_fold,
        "metrics": summary,
        "run": str(run.path),
    }
    run.write_json("cv.json", result)
    return result
