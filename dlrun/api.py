"""The Python API (also what the CLI calls): same validation, same errors, no printing of results.

import dlrun
loaded = dlrun.load_recipe("recipes/mnist.yaml", overrides=["train.epochs=1"])
model = dlrun.build_model(loaded)
result = dlrun.train(loaded)
metrics = dlrun.evaluate(result.run.path)
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import RecipeError
from dlrun.recipe.compose import LoadedRecipe

if TYPE_CHECKING:  # the real types, without importing Keras for `import dlrun`
    import keras

    from dlrun.engine.session import TrainResult
    from dlrun.graph.build import Built
    from dlrun.verbs.tune.leaderboard import TuneResult


def load_recipe(source: str | Path | LoadedRecipe, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read, compose, validate and statically check a recipe (no TensorFlow import)."""
    from dlrun.loading import load_recipe as _load

    if isinstance(source, LoadedRecipe):
        return source
    return _load(source, overrides)


def _activated(loaded: LoadedRecipe) -> LoadedRecipe:
    """Select the recipe's backend and dtype policy before Keras is imported."""
    from dlrun.backend import activate

    activate(loaded.recipe)
    return loaded


def build(loaded: LoadedRecipe | str | Path, *, trust: bool = False) -> Built:
    """Build the model and keep per-node tensors and layers (`Built`)."""
    from dlrun.graph.build import build_traced
    from dlrun.importer import Importer

    loaded = load_recipe(loaded)
    with loaded.locating_errors():
        _activated(loaded)
        importer = Importer(loaded.recipe.imports, loaded.base_dir, trust=trust)
        from dlrun.data.preprocess import shapes_from_data

        shapes_from_data(loaded, importer)  # `shape: auto` inputs: the prepared data's shapes
        return build_traced(loaded.graph, importer, doc=loaded.doc, base_dir=loaded.base_dir)


def build_model(loaded: LoadedRecipe | str | Path, *, trust: bool = False) -> keras.Model:
    """The recipe's `keras.Model` (not compiled)."""
    return build(loaded, trust=trust).model


def check(loaded: LoadedRecipe | str | Path, *, trust: bool = False, batch: int = 2) -> dict[str, Any]:
    """Build, compile and run one training step on random data shaped from the declared inputs."""
    from dlrun.verbs.check import check_recipe

    loaded = load_recipe(loaded)
    with loaded.locating_errors():
        return check_recipe(_activated(loaded), trust=trust, batch=batch)


def train(loaded: LoadedRecipe | str | Path, **kwargs: Any) -> TrainResult:
    """Train a recipe (options: the fields of `dlrun.engine.session.RunPolicy`); returns a `TrainResult`, its
    run folder holding the learning curves and (classifiers) confusion matrices (`result.plots`)."""
    from dlrun.verbs.train import train_run

    return train_run(load_recipe(loaded), **kwargs)


def recipe_to_train(
    recipe: Path | None, *, resume: Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Path:
    """The recipe file `dlrun train` runs: RECIPE, or with `resume` the run folder's own recipe.yaml."""
    from dlrun.engine.rundir import resume_source

    return resume_source(resume, recipe, overrides)


def cross_validate(loaded: LoadedRecipe | str | Path, folds: int = 5, **kwargs: Any) -> dict[str, Any]:
    """K-fold cross-validation (see `dlrun.verbs.cv.cross_validate` for options): per-fold metrics, mean, std."""
    from dlrun.verbs.cv import cross_validate as _cross_validate

    loaded = load_recipe(loaded)
    with loaded.locating_errors():
        return _cross_validate(_activated(loaded), folds, **kwargs)


def evaluate(run: str | Path, *, split: str | None = None, trust: bool = False, unsafe: bool = False) -> dict[str, Any]:
    """Evaluate a finished run's model; returns metrics and writes eval.json into the run."""
    from dlrun.verbs.evaluate import evaluate_run

    return evaluate_run(Path(run), split=split, trust=trust, unsafe=unsafe)


def export(
    run: str | Path,
    fmt: str,
    *,
    output: Path | None = None,
    overwrite: bool = False,
    trust: bool = False,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Export a run's model (keras, savedmodel, tflite, onnx) and verify it against the Keras model."""
    from dlrun.engine.artifacts import load_run
    from dlrun.verbs.export import export_model

    trained = load_run(Path(run), trust=trust, unsafe=unsafe)
    target = output or trained.run.path / "export" / ("model" if fmt != "savedmodel" else "savedmodel")
    return export_model(trained.model, fmt, Path(target), overwrite=overwrite)


def eject(loaded: LoadedRecipe | str | Path) -> str:
    """Plain Keras Python that builds the recipe's model: `build_model()` and `compile_model(model)`."""
    from dlrun.graph.eject import eject as _eject

    return _eject(load_recipe(loaded))


def import_model(
    model: str | Path, *, name: str | None = None, fold: bool = True, imports: list[str] | tuple[str, ...] = ()
) -> tuple[dict[str, Any], str]:
    """A recipe for a saved Keras functional or Sequential model: (document, YAML text). Repeated structure
    is folded into `blocks:` unless `fold=False`; `imports` name modules defining its registered classes."""
    from dlrun.graph.import_ import import_model as _import

    return _import(Path(model), name=name, fold=fold, imports=imports)


def predict(
    run: str | Path,
    input: str | Path,
    *,
    output: str | Path | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    trust: bool = False,
    unsafe: bool = False,
) -> dict[str, Any]:
    """Predict on a raw input file (npz, npy, CSV, JSON lines, Parquet, an image or a folder of images) with a
    run's model; writes CSV or JSON rows (default RUN/predictions/<input stem>.csv) and returns a summary."""
    from dlrun.verbs.predict import predict_file

    target = Path(output) if output is not None else None
    return predict_file(
        Path(run), Path(input), output=target, batch_size=batch_size, overwrite=overwrite, trust=trust, unsafe=unsafe
    )


def serve(
    run: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    trust: bool = False,
    unsafe: bool = False,
    max_batch: int | None = None,
    max_wait_ms: float | None = None,
) -> None:
    """Serve a run's model as an HTTP JSON API (`POST /predict`, `/health`, `/docs`) until interrupted; the
    run is loaded and checked before anything binds. Needs the `serve` extra (FastAPI, uvicorn)."""
    from dlrun.verbs.serve import MAX_BATCH, MAX_WAIT_MS, app_for_run, serve_run

    app = app_for_run(
        Path(run),
        trust=trust,
        unsafe=unsafe,
        max_batch=MAX_BATCH if max_batch is None else max_batch,
        max_wait_ms=MAX_WAIT_MS if max_wait_ms is None else max_wait_ms,
    )
    serve_run(app, host=host, port=port)


def plot(model: keras.Model, file: Path, *, expand: bool = False) -> None:
    """Draw the model with Keras' model_to_dot (needs pydot and graphviz: the `plot` extra)."""
    from dlrun.graph.picture import draw_model

    draw_model(model, file, expand=expand)


def check_plot_tools(file: Path) -> None:
    """Refuse `--plot FILE` at once (before any model is built) when pydot or graphviz is missing."""
    from dlrun.graph.picture import check_tools

    check_tools(file)


def plot_runs(runs: list[str | Path], out: str | Path, *, metric: str | None = None) -> dict[str, Any]:
    """Several runs' learning curves overlaid in one PNG or SVG (`dlrun plot`)."""
    from dlrun.verbs.plot import plot_runs as _plot_runs

    return _plot_runs([Path(r) for r in runs], Path(out), metric)


def json_schema_text() -> str:
    """The recipe format's JSON Schema, enriched for editors (the text of `docs/recipe.schema.json`)."""
    from dlrun.docs import schema_text

    return schema_text()


def write_crash_log(text: str) -> Path:
    """Save an internal error's traceback where a user can attach it to a report."""
    folder = Path(tempfile.gettempdir()) / "dlrun-crashes"
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"crash-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}.log"
    file.write_text(text, encoding="utf-8")
    return file


def tune(
    recipe: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    trials: int | None = None,
    study_dir: str | Path | None = None,
    timeout: float | None = None,
    trust: bool = False,
    quiet: bool = True,
    storage: str | None = None,
    workers: int = 1,
) -> TuneResult:
    """Run (or resume) the recipe's `search:` study with Optuna; returns a `TuneResult` (leaderboard, best).
    `storage`: a journal file or an RDB URL shared by several workers; `workers`: local worker processes."""
    from dlrun.verbs.tune.study import run_study

    folder = Path(study_dir) if study_dir is not None else None
    return run_study(
        Path(recipe),
        overrides=overrides,
        trials=trials,
        study_dir=folder,
        timeout=timeout,
        trust=trust,
        quiet=quiet,
        storage=storage,
        workers=workers,
    )


def ensemble(
    runs: list[str | Path],
    *,
    weights: str | list[float] | None = None,
    method: str | None = None,
    split: str | None = None,
    export: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    runs_root: str | Path = Path("runs"),
    trust: bool = False,
    unsafe: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Score the mean (or majority-vote) ensemble of finished runs beside each member; optionally export it.
    Given one recipe file instead, train the members its `ensemble:` section declares first."""
    sources = [Path(r) for r in runs]
    if len(sources) == 1 and sources[0].is_file():
        return train_ensemble(
            sources[0],
            overrides=overrides,
            runs_root=runs_root,
            weights=weights,
            method=method,
            split=split,
            export=export,
            trust=trust,
            quiet=quiet,
        )
    from dlrun.verbs.ensemble import ensemble_runs

    if overrides:
        raise RecipeError("--set applies to a recipe; run folders are scored as they were trained")
    return ensemble_runs(
        sources,
        weights=weights,
        method=method or "mean",
        split=split,
        export=Path(export) if export is not None else None,
        trust=trust,
        unsafe=unsafe,
    )


def train_ensemble(
    recipe: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    runs_root: str | Path = Path("runs"),
    weights: str | list[float] | None = None,
    method: str | None = None,
    split: str | None = None,
    export: str | Path | None = None,
    trust: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Train the members of a recipe's `ensemble:` section (seeds or recipe files), then score the ensemble."""
    from dlrun.verbs.ensemble import train_ensemble as _train_ensemble

    return _train_ensemble(
        Path(recipe),
        overrides=overrides,
        runs_root=Path(runs_root),
        weights=weights,
        method=method,
        split=split,
        export=Path(export) if export is not None else None,
        trust=trust,
        quiet=quiet,
    )
