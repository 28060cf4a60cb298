"""Tracking: MLflow logging (`train.mlflow`) into a local file store; TensorBoard logs by default."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from dlrun import api
from dlrun.engine.tracking import flatten, tracking_uri
from dlrun.errors import RecipeError
from tests.conftest import write_recipe

RECIPE = """
name: tracked
seed: 0
data:
  source: npz
  path: data.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y, steps: [{one_hot: 3}]}}
  validation_split: 0.25
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: hidden, type: Dense, units: 8, activation: relu}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile: {optimizer: adam, loss: categorical_crossentropy, metrics: [accuracy]}
train:
  epochs: 1
  batch_size: 16
  stages:
    - {name: first, epochs: 2}
    - {name: second, epochs: 1, optimizer: {type: Adam, learning_rate: 0.0001}}
  mlflow: {tracking_uri: STORE, experiment: dlrun-tests}
"""


def _data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])


class _PlotWriter:
    """Stands in for the plots a run writes into its folder (any PNG/SVG there goes to MLflow at the end)."""

    def __new__(cls, root):
        import keras

        class Writer(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                for run in (root / "runs").glob("*/*"):
                    (run / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
                    (run / "plots").mkdir(exist_ok=True)
                    (run / "plots" / "confusion.svg").write_text("<svg/>")

        return Writer()


def test_flatten_turns_the_resolved_recipe_into_params():
    params = flatten(
        {
            "$schema": "x",
            "name": "n",
            "model": {"inputs": {"image": {"shape": [28, 28, 1]}}, "layers": [{"units": 512, "activation": None}]},
            "train": {"shuffle": True, "callbacks": []},
        }
    )
    assert params == {
        "name": "n",
        "model.inputs.image.shape": "[28, 28, 1]",
        "model.layers.0.units": "512",
        "model.layers.0.activation": "null",
        "train.shuffle": "true",
        "train.callbacks": "[]",
    }
    assert len(flatten({"long": "x" * 10_000})["long"]) == 500


def test_a_folder_becomes_a_file_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert tracking_uri(str(tmp_path / "mlruns")) == (tmp_path / "mlruns").as_uri()
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert tracking_uri(None) is None
    import os

    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"


def test_mlflow_missing_is_a_clear_user_error(tmp_path, monkeypatch):
    from dlrun.engine.tracking import tracking_callbacks

    _data(tmp_path)
    loaded = api.load_recipe(write_recipe(tmp_path, RECIPE.replace("STORE", str(tmp_path / "mlruns"))))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(RecipeError, match=r"train.mlflow needs MLflow.*pip install 'dlrun\[mlflow\]'"):
        tracking_callbacks(loaded, run=None)


def test_recipe_without_mlflow_adds_no_callback(tmp_path):
    from dlrun.engine.tracking import tracking_callbacks

    text = RECIPE.replace("  mlflow: {tracking_uri: STORE, experiment: dlrun-tests}\n", "")
    assert tracking_callbacks(api.load_recipe(write_recipe(tmp_path, text)), run=None) == []


def test_training_logs_params_metrics_and_paths_to_a_local_mlflow_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's default store (./mlflow.db) is never this checkout
    _data(tmp_path)
    store = tmp_path / "mlruns"
    loaded = api.load_recipe(write_recipe(tmp_path, RECIPE.replace("STORE", str(store))))
    result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True, extra_callbacks=[_PlotWriter(tmp_path)])

    record = json.loads((result.run.path / "mlflow.json").read_text(encoding="utf-8"))
    client = MlflowClient(tracking_uri=store.as_uri())
    run = client.get_run(record["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "dlrun-tests"
    assert run.info.run_name == result.run.path.name
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.layers.0.units"] == "8"
    assert params["train.stages.1.optimizer.learning_rate"] == "0.0001"
    assert params["compile.loss"] == "categorical_crossentropy"
    assert "$schema" not in params
    history = client.get_metric_history(record["run_id"], "loss")
    assert [m.step for m in history] == [1, 2, 3]  # one run across both stages, step = epoch
    assert [m.value for m in history] == pytest.approx(result.history["loss"])
    assert {"val_loss", "accuracy", "val_accuracy"} <= set(run.data.metrics)
    assert run.data.tags["dlrun.model_path"] == str(result.run.model.resolve())
    assert result.run.model.is_file()
    assert run.data.tags["dlrun.run_dir"] == str(result.run.path.resolve())
    # after training: the test metrics, the model (a file, and a model in MLflow's Keras flavour) and the plots
    assert run.data.metrics["test_loss"] == pytest.approx(result.metrics["loss"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert [m.step for m in client.get_metric_history(record["run_id"], "test_accuracy")] == [3]
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    # the run's own pictures (drawn before tracking finishes) and any other PNG/SVG in its folder, subfolders kept
    assert artifacts == {"recipe.yaml", "model.keras", "learning_curves.png", "confusion_y.png", "curves.png", "plots"}
    assert [a.path for a in client.list_artifacts(record["run_id"], "plots")] == ["plots/confusion.svg"]
    pytest.importorskip("pandas", reason="MLflow's Keras flavour imports pandas (mlflow-skinny does not bring it)")
    import mlflow.keras

    models = client.search_logged_models([run.info.experiment_id])
    assert [m.source_run_id for m in models] == [record["run_id"]]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())  # where `models:/<id>` URIs are looked up
    reloaded = mlflow.keras.load_model(models[0].model_uri)
    x = np.random.default_rng(1).random((5, 4), dtype=np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), result.model.predict(x, verbose=0), rtol=1e-6)


def test_tensorboard_logs_are_written_by_default(tmp_path):
    pytest.importorskip("tensorboard")
    _data(tmp_path)
    text = RECIPE.replace("  mlflow: {tracking_uri: STORE, experiment: dlrun-tests}\n", "")
    loaded = api.load_recipe(write_recipe(tmp_path, text), overrides=["train.stages=[]"])
    assert loaded.recipe.train.tensorboard is True
    result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    assert any(result.run.tensorboard.rglob("events.out.tfevents.*"))
    # the test metrics and the recipe's hyperparameters, read back as TensorBoard reads them
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(result.run.tensorboard), size_guidance={"tensors": 0})
    events.Reload()
    tags = [t for t in events.Tags()["tensors"] if t.startswith("test_")]
    scalars = {tag: [(e.step, float(tf_value(e))) for e in events.Tensors(tag)] for tag in tags}
    assert scalars["test_accuracy"] == [(1, pytest.approx(result.metrics["accuracy"]))]
    assert scalars["test_loss"] == [(1, pytest.approx(result.metrics["loss"]))]
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(next(iter(content.values()))).session_start_info
    assert session.group_name == result.run.path.name
    assert session.hparams["model.layers.0.units"].number_value == 8
    assert session.hparams["compile.optimizer"].string_value == "adam"
    assert session.hparams["train.batch_size"].number_value == 16
    import tensorflow as tf

    events = [
        e
        for f in result.run.tensorboard.rglob("events.out.tfevents.*")
        for e in tf.compat.v1.train.summary_iterator(str(f))
    ]
    tags = {v.tag for e in events for v in e.summary.value}
    assert "epoch_loss" in tags
    # issue 21: the graph and the model's config cost ~1.3 s CPU per stage of a MobileNetV2 run; scalars only
    assert not any(e.graph_def for e in events) and "keras" not in tags


def tf_value(event):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto).item()


@pytest.mark.parametrize("update_freq, calls", [("epoch", 0), (1, 2)])
def test_tensorboard_logging_per_epoch_makes_no_summary_call_per_batch(tmp_path, monkeypatch, update_freq, calls):
    """Keras' TensorBoard called `summary.scalar` for every metric after every batch even with
    update_freq='epoch', where no writer takes them (no-ops of ~0.3 ms CPU a step: issue 21). dlrun's
    (the default one and a recipe's own) skips them; with a batch frequency they are still written."""
    pytest.importorskip("tensorboard")
    import keras

    from dlrun.engine.callbacks import make_callbacks
    from dlrun.engine.rundir import RunDir
    from dlrun.importer import Importer
    from dlrun.recipe.schema import Component

    run = RunDir.create(tmp_path / "runs", "tb")
    comp = Component(type="TensorBoard", write_graph=False, update_freq=update_freq)
    [callback] = make_callbacks([comp], run, Importer([], tmp_path), ("train", "callbacks"))
    written: list[str] = []
    real = callback.summary

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def scalar(self, name, *args, **kwargs):
            written.append(name)
            return real.scalar(name, *args, **kwargs)

    monkeypatch.setattr(keras.callbacks.TensorBoard, "summary", property(lambda self: Counting()))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    callback.on_train_batch_end(0, {"loss": 1.0, "mae": 2.0})
    assert len(written) == calls
    callback.on_train_end()


def test_default_tensorboard_log_reads_back_as_keras_writes_it(tmp_path):
    """The default log (engine.tensorboard_log, issue 21: ~10 ms CPU an epoch less) holds what Keras'
    TensorBoard(write_graph=False) writes for the same fit: per folder (train/, validation/) the same tags,
    steps and values, as TensorBoard reads them."""
    pytest.importorskip("tensorboard")
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlrun.engine.tensorboard_log import TensorBoardScalars

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4), dtype=np.float32), rng.integers(0, 3, 64)

    def logged(make_callback):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        folder = tmp_path / make_callback.__name__
        model.fit(x, y, validation_split=0.25, epochs=3, batch_size=16, verbose=0, callbacks=[make_callback(folder)])
        read = {}
        for kind in ("train", "validation"):
            events = EventAccumulator(str(folder / kind), size_guidance={"tensors": 0})
            events.Reload()
            read[kind] = {
                tag: [(e.step, float(tf_value(e))) for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]
            }
        return read

    def keras_callback(folder):
        return keras.callbacks.TensorBoard(str(folder), write_graph=False)

    def dlrun_callback(folder):
        return TensorBoardScalars(folder)

    ours, theirs = logged(dlrun_callback), logged(keras_callback)
    assert set(theirs["train"]) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert {"epoch_loss", "evaluation_loss_vs_iterations"} <= set(theirs["validation"])
    assert ours == theirs


def test_hparams_session_is_the_message_tensorboard_makes(tmp_path):
    """engine.tensorboard_log builds the HParams session from the plugin's protocol buffers (its API costs
    ~0.15 s CPU to import): byte for byte the summary `hparams_pb` makes for the same values."""
    pytest.importorskip("tensorboard")
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    from dlrun.engine.tensorboard_log import EventFile

    values = {"train.batch_size": 16, "compile.optimizer": "adam", "train.shuffle": True, "lr": 0.001}
    file = EventFile(tmp_path)
    file.hparams(values, "20260101-120000", 1234.5)
    file.close()
    events = list(tf.compat.v1.train.summary_iterator(str(file.path)))
    assert [e.step for e in events if e.summary.value] == [0]
    written = next(e.summary for e in events if e.summary.value)
    expected = hp.hparams_pb(values, trial_id="20260101-120000", start_time_secs=1234.5)
    assert written.SerializeToString() == expected.SerializeToString()
