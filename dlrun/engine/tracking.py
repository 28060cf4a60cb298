"""Experiment tracking: MLflow, when the recipe says `train.mlflow: {...}` (optional extra `dlrun[mlflow]`),
and the end-of-run summary TensorBoard gets beside Keras' own logs.

Logged: the resolved recipe flattened into params (`model.layers.0.units = 512`), every epoch's metrics
(step = epoch number, 1-based like history.csv), recipe.yaml as an artifact, and tags with the run
folder and the model path. Once the model is saved and evaluated (`finish_tracking`): the evaluation
metrics as `test_<metric>` (step = the last epoch), model.keras and the run folder's plots to MLflow;
the evaluation metrics and the recipe's values as hyperparameters (HParams plugin) to TensorBoard. The MLflow run id is kept in `<run>/mlflow.json`, so a resumed run
(`dlrun train --resume`) continues the same MLflow run, and stages (several `fit` calls) share it.
MLflow is imported only when a recipe asks for it; this module itself imports neither it nor TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun import util
from dlrun.errors import RecipeError

if TYPE_CHECKING:
    import keras

    from dlrun.engine.rundir import RunDir
    from dlrun.recipe.compose import LoadedRecipe
    from dlrun.recipe.schema import MlflowSpec


MAX_PARAM_VALUE = 500  # MLflow's historical limit (newer servers allow more; older ones refuse more)
MAX_BATCH = 100  # params per log_batch request
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def flatten(document: Any) -> dict[str, str]:
    """`{model: {layers: [{units: 512}]}}` -> `{"model.layers.0.units": "512"}` (MLflow params).

    Lists of plain values stay one param (`[28, 28, 1]`); lists holding mappings are indexed.
    """
    out: dict[str, str] = {}
    for path, leaf in util.flatten({k: v for k, v in document.items() if k != "$schema"}).items():
        text = json.dumps(leaf) if isinstance(leaf, list | bool) or leaf is None else str(leaf)
        key = ".".join(_KEY_CHARS.sub("_", str(part)) for part in path)
        out[key] = text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."
    return out


def tracking_uri(value: str | None) -> str | None:
    """A folder becomes a `file:` URI (MLflow 3 needs MLFLOW_ALLOW_FILE_STORE for those: set if unset)."""
    if value is None:
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", value) or value.startswith(("sqlite:", "databricks")):
        uri = value
    else:
        uri = Path(value.removeprefix("file:")).expanduser().resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def tracking_callbacks(loaded: LoadedRecipe, run: RunDir) -> list[keras.callbacks.Callback]:
    """The Keras callbacks the recipe's tracking options ask for (none when `train.mlflow` is unset)."""
    from dlrun.backend import is_chief

    spec = getattr(loaded.recipe.train, "mlflow", None)
    if spec is None or not is_chief():  # multi-worker: one MLflow run, from the chief
        return []
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise RecipeError(
            "train.mlflow needs MLflow, which is not installed: pip install 'dlrun[mlflow]'", path=("train", "mlflow")
        ) from None
    return [_mlflow_callback(spec, loaded, run)]


def _mlflow_callback(spec: MlflowSpec, loaded: LoadedRecipe, run: RunDir) -> keras.callbacks.Callback:
    import keras
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.tracking import MlflowClient

    from dlrun.engine.rundir import atomic_write_text

    uri = tracking_uri(spec.tracking_uri)
    state_file = Path(run.path) / "mlflow.json"

    class MlflowLogger(keras.callbacks.Callback):
        """Per-epoch metrics to one MLflow run that spans every stage (and resumes)."""

        def __init__(self) -> None:
            super().__init__()
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id: str | None = None

        def _start(self) -> None:
            if state_file.is_file():
                self.run_id = json.loads(state_file.read_text(encoding="utf-8"))["run_id"]
                self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                return
            name = spec.experiment or loaded.recipe.name
            try:
                experiment = self.client.get_experiment_by_name(name)
                experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
                created = self.client.create_run(
                    experiment_id,
                    run_name=spec.run_name or Path(run.path).name,
                    tags={
                        "dlrun.recipe": str(loaded.source),
                        "dlrun.run_dir": str(Path(run.path).resolve()),
                        "dlrun.model_path": str(Path(run.model).resolve()),
                    },
                )
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                where = uri or "its default location"
                raise RecipeError(f"MLflow at {where}: {first}", path=("train", "mlflow")) from None
            self.run_id = created.info.run_id
            params = [Param(k, v) for k, v in flatten(loaded.resolved()).items()]
            for i in range(0, len(params), MAX_BATCH):
                self.client.log_batch(self.run_id, params=params[i : i + MAX_BATCH])
            recipe_file = Path(run.path) / "recipe.yaml"
            if recipe_file.is_file():
                self.client.log_artifact(self.run_id, str(recipe_file))
            record = {"tracking_uri": self.client.tracking_uri, "experiment_id": experiment_id, "run_id": self.run_id}
            atomic_write_text(state_file, json.dumps(record, indent=2) + "\n")

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self._start()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.run_id is None:
                return
            now = int(time.time() * 1000)
            metrics = []
            for key, value in (logs or {}).items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                metrics.append(Metric(_KEY_CHARS.sub("_", key), number, now, epoch + 1))
            if metrics:
                self.client.log_batch(self.run_id, metrics=metrics)

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self.run_id is not None:
                self.client.set_terminated(self.run_id, status="FINISHED")  # a later stage reopens it

    return MlflowLogger()


def metric_key(split: str, name: str) -> str:
    """The name a final evaluation metric is tracked under: `test_accuracy` (MLflow and TensorBoard alike)."""
    return _KEY_CHARS.sub("_", f"{split}_{name}")


def finish_tracking(
    loaded: LoadedRecipe, run: RunDir, model: keras.Model, metrics: dict[str, float], *, split: str, step: int
) -> list[str]:
    """After the model is saved and evaluated: the evaluation metrics and hyperparameters to TensorBoard
    (HParams plugin), and the metrics, model and plots to the run's MLflow run. Returns status notes."""
    from dlrun.backend import is_chief

    if not is_chief():
        return []
    notes: list[str] = []
    if Path(run.tensorboard).is_dir():
        _tensorboard_summary(loaded, run, metrics, split=split, step=step)
    if getattr(loaded.recipe.train, "mlflow", None) is not None and (Path(run.path) / "mlflow.json").is_file():
        notes += _mlflow_summary(run, model, metrics, split=split, step=step)
    return notes


def hyperparameters(document: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The resolved recipe as HParams values: numbers, booleans and strings as they are, the rest as JSON."""
    out: dict[str, bool | int | float | str] = {}
    for path, leaf in util.flatten({k: v for k, v in document.items() if k != "$schema"}).items():
        key = ".".join(str(part) for part in path)
        out[key] = leaf if isinstance(leaf, bool | int | float | str) else json.dumps(leaf)
    return out


def _tensorboard_summary(
    loaded: LoadedRecipe, run: RunDir, metrics: dict[str, float], *, split: str, step: int
) -> None:
    """The recipe's hyperparameters (one HParams session: this run) and the evaluation metrics as scalars,
    written beside Keras' train/ and validation/ logs so TensorBoard's HParams tab lists them together."""
    from dlrun.engine.tensorboard_log import write_run_summary

    scalars = {metric_key(split, name): float(value) for name, value in metrics.items()}
    write_run_summary(Path(run.tensorboard), hyperparameters(loaded.resolved()), Path(run.path).name, scalars, step)


def _mlflow_summary(run: RunDir, model: keras.Model, metrics: dict[str, float], *, split: str, step: int) -> list[str]:
    """Evaluation metrics, model.keras (an artifact, and a model in MLflow's Keras flavour when it loads) and
    the run folder's PNG/SVG plots, logged to the MLflow run the training callback started."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    record = json.loads((Path(run.path) / "mlflow.json").read_text(encoding="utf-8"))
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run_id = record["run_id"]
    now = int(time.time() * 1000)
    batch = [Metric(metric_key(split, k), float(v), now, step) for k, v in metrics.items()]
    if batch:
        client.log_batch(run_id, metrics=batch)
    notes = []
    if Path(run.model).is_file():
        client.log_artifact(run_id, str(run.model))
        notes += _log_keras_flavour(record["tracking_uri"], run_id, model)
    for plot in sorted(p for p in Path(run.path).rglob("*") if p.suffix.lower() in (".png", ".svg") and p.is_file()):
        folder = plot.parent.relative_to(run.path).as_posix()
        client.log_artifact(run_id, str(plot), artifact_path=None if folder == "." else folder)
    return notes


def _log_keras_flavour(uri: str, run_id: str, model: keras.Model) -> list[str]:
    """Log model.keras with `mlflow.keras.log_model` (loadable with `mlflow.keras.load_model`). mlflow-skinny
    alone cannot: its Keras flavour imports pandas; then the artifact is what MLflow gets, and a note says so."""
    import logging

    try:
        import mlflow
        import mlflow.keras
    except ImportError as exc:
        need = exc.name or "pandas"
        return [f"MLflow: model.keras logged as an artifact; the Keras model flavour needs {need} (pip install {need})"]
    from mlflow.tracking._tracking_service import utils as tracking_utils

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "saving a Keras model without specifying model signature"
    try:
        # The process's own tracking URI (set or not) comes back afterwards: MLflow's scoped setter (private,
        # present since MLflow 1); set_tracking_uri could only pin today's default in its place.
        with tracking_utils._use_tracking_uri(uri), mlflow.start_run(run_id=run_id):
            mlflow.keras.log_model(model, name="model")
    except Exception as exc:  # the run folder is complete; MLflow's copy of the model is a convenience
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [f"MLflow: model.keras logged as an artifact; the Keras model flavour failed: {first}"]
    finally:
        logger.setLevel(level)
    return []
