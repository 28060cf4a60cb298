"""`dlrun cv RECIPE --folds K`: K-fold cross-validation, one ordinary training session per fold.

The recipe's training pool (its `train` split after `limit`, slices and `test_split`) is cut into K seeded
folds, stratified when `data.stratify` is on. Each fold is a full `dlrun train` session (same seed, stages,
callbacks, checkpoints; preprocessing adapted on that fold's training part only) whose validation data is
the held-out fold, the seeds' way: EarlyStopping and best checkpoints watch the held-out fold, and with
`train.restore_best` the best epoch's weights are restored before the fold is scored on it. So
`validation_split` is not applied (the held-out fold is the validation data), and the test split is not
touched. Layout: `runs/<name>-cv/<timestamp>/cv.json` (per-fold metrics, their mean and sample standard
deviation, ddof=1) and `fold-<i>/`, a run folder per fold (recipe, history, checkpoints, model, eval.json)
with `fold.json` (the fold's training and held-out row indices into the pool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlrun.console import say
from dlrun.engine.rundir import RunDir
from dlrun.errors import RecipeError
from dlrun.recipe.compose import LoadedRecipe

STD = "sample standard deviation over the folds (ddof=1)"


def cross_validate(
    loaded: LoadedRecipe,
    folds: int = 5,
    *,
    runs_root: Path = Path("runs"),
    trust: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train and score the recipe on each of `folds` folds; returns per-fold metrics and their mean/std."""
    from dlrun.backend import activate
    from dlrun.data.prepare import load_recorded_splits, prepare_tables, stratify_labels
    from dlrun.data.record import describe
    from dlrun.data.splits import kfold
    from dlrun.engine.session import RunPolicy, RunSession

    recipe = loaded.recipe
    spec = recipe.data
    if spec is None:
        raise RecipeError("this recipe has no `data` section; nothing to cross-validate", path=("data",))
    activate(recipe)
    import keras

    tables, record = load_recorded_splits(spec, loaded.base_dir, recipe.seed, validation=False)
    say(describe(record), quiet=quiet)  # before any TensorFlow work
    pool = tables["train"]
    labels = stratify_labels(spec, pool)
    pairs = kfold(pool.count, folds, recipe.seed, labels)
    callbacks = [*recipe.train.callbacks, *(c for s in recipe.train.stages or [] for c in s.callbacks or [])]
    checkpoint = any(c.type == "ModelCheckpoint" and c.kwargs.get("save_best_only") for c in callbacks)
    best = " (its best epoch restored)" if recipe.train.restore_best and checkpoint else ""
    unused = f"; validation_split {spec.validation_split} is not applied" if spec.validation_split else ""
    say(
        f"{folds}-fold cross-validation of the {pool.count} training samples"
        f"{' (stratified)' if labels is not None else ''}: each fold trains on the rest, validates on the "
        f"held-out fold{best} and is scored on it{unused}",
        quiet=quiet,
    )
    cv_run = RunDir.create(runs_root, f"{recipe.name}-cv")
    per_fold: list[dict[str, float]] = []
    for i, (train_idx, held_idx) in enumerate(pairs):
        keras.backend.clear_session()
        prepared = prepare_tables(
            spec, {"train": pool.take(train_idx), "validation": pool.take(held_idx)}, recipe.seed, vocab_from=pool
        )
        policy = RunPolicy(trust=trust, quiet=True, folder=cv_run.path / f"fold-{i + 1}", eval_split="validation")
        result = RunSession(loaded, policy).run(prepared)
        result.run.write_json(
            "fold.json",
            {"fold": i + 1, "of": folds, "train": train_idx.tolist(), "held_out": held_idx.tolist()},
        )
        per_fold.append(result.metrics)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        say(
            f"fold {i + 1}/{folds}: trained on {len(train_idx)}, scored on {len(held_idx)} held out: {shown}",
            quiet=quiet,
        )
    summary = {
        name: {
            "mean": float(np.mean([m[name] for m in per_fold])),
            "std": float(np.std([m[name] for m in per_fold], ddof=1)),
            "folds": [m[name] for m in per_fold],
        }
        for name in per_fold[0]
    }
    result = {
        "recipe": loaded.source,
        "folds": folds,
        "stratified": labels is not None,
        "samples": pool.count,
        "seed": recipe.seed,
        "std": STD,
        "per_fold": per_fold,
        "metrics": summary,
        "run": str(cv_run.path),
        "fold_runs": [str(cv_run.path / f"fold-{i + 1}") for i in range(folds)],
    }
    cv_run.write_json("cv.json", result)
    return result
