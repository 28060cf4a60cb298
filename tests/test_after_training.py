"""After training: eval reports and plots, export round trips, runs listing and comparison."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from dlrun import api
from dlrun.verbs.report import classification_report, regression_report
from tests.conftest import RECIPES
from tests.test_lifecycle import _recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    recipe = _recipe(tmp, epochs=2, n=600)
    first = api.train(api.load_recipe(recipe), runs_root=tmp / "runs", quiet=True)
    second = api.train(api.load_recipe(recipe, overrides=["train.batch_size=64"]), runs_root=tmp / "runs", quiet=True)
    return tmp, first, second


def test_classification_report_matches_hand_computed_numbers():
    y_true = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    y_pred = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    rep = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["classes"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                   "support": 2}  # fmt: skip


def test_regression_report():
    rep = regression_report(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert rep["mae"] == pytest.approx(1 / 3) and rep["rmse"] == pytest.approx(np.sqrt(1 / 3))
    assert rep["r2"] == pytest.approx(1 - 1 / 2)


def test_eval_adds_reports_and_plots(cli, trained):
    _, first, _ = trained
    result = cli("eval", str(first.run.path), "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    rep = data["reports"]["y"]
    assert rep["kind"] == "classification" and len(rep["confusion_matrix"]) == 3
    assert sum(map(sum, rep["confusion_matrix"])) == data["samples"]
    assert rep["accuracy"] == pytest.approx(data["metrics"]["accuracy"], abs=1e-6)
    assert set(data["plots"]) == {"learning_curves.png", "confusion_y.png"}
    assert (first.run.path / "confusion_y.png").read_bytes()[:4] == b"\x89PNG"
    table = cli("eval", str(first.run.path))
    assert "macro avg" in table.stdout


@pytest.mark.parametrize(
    "fmt",
    [
        "keras",
        "savedmodel",
        pytest.param("tflite", marks=pytest.mark.slow),
        pytest.param("onnx", marks=pytest.mark.slow),
    ],
)
def test_export_round_trips(cli, trained, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("tf2onnx")
    tmp, first, _ = trained
    target = tmp / f"export-{fmt}"
    result = cli("export", str(first.run.path), "--format", fmt, "--output", str(target), "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verified"] and data["max_abs_difference"] < 1e-4
    again = cli("export", str(first.run.path), "--format", fmt, "--output", str(target))
    assert again.code == 2 and "exists; pass --overwrite" in again.stderr


@pytest.mark.slow
def test_onnx_export_of_a_two_input_model_with_adapted_normalization(cli, tmp_path):
    """tf2onnx turned the Normalization statistics into extra graph inputs: the export asked for six inputs."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    recipe = api.load_recipe(RECIPES / "iris_concat.yaml", overrides=["train.epochs=1"])
    run = str(api.train(recipe, runs_root=tmp_path / "runs", quiet=True).run.path)
    result = cli("export", run, "--format", "onnx", "--output", str(tmp_path / "iris"), "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["max_abs_difference"] < 1e-5
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "iris.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["sepal", "petal"]
    if importlib.util.find_spec("jax") and not importlib.util.find_spec("jax2onnx"):
        refused = cli("export", run, "--format", "onnx", "--output", str(tmp_path / "j"), env={"KERAS_BACKEND": "jax"})
        assert refused.code == 2 and refused.stderr.startswith("error: onnx export under jax needs jax2onnx")
        assert not (tmp_path / "j.onnx").exists()


def test_runs_lists_and_compare_shows_differences(cli, trained):
    tmp, first, second = trained
    listing = json.loads(cli("runs", str(tmp / "runs"), "--json").stdout)
    assert {r["run"] for r in listing} >= {str(first.run.path), str(second.run.path)}
    assert all(r["status"] == "finished" and r["epochs"] == 2 for r in listing)
    diff = json.loads(cli("compare", str(first.run.path), str(second.run.path), "--json").stdout)
    assert diff["differences"] == {"train.batch_size": [32, 64]}
    assert set(diff["metrics"]) == {"accuracy", "loss"}


@pytest.mark.parametrize("samples", [48, 50])
@pytest.mark.parametrize("few_batches", [32, 0], ids=["batch-by-batch", "keras-loops"])
def test_one_pass_evaluation_gives_keras_evaluate_numbers(monkeypatch, few_batches, samples):
    """engine.artifacts.evaluate_and_predict (train and eval predict once and score the predictions) gives
    `model.evaluate`'s numbers: two outputs with their loss weights; a regularized model is evaluated by Keras.
    Both ways: a split of a few batches stepped through one by one, a larger one through Keras' loops; 50
    samples leave a smaller last batch, whose per-output losses Keras' traced loop does not weigh by size."""
    import keras

    from dlrun.data.prepare import ArraySplit, Prepared
    from dlrun.engine import artifacts
    from dlrun.engine.artifacts import evaluate_and_predict

    monkeypatch.setattr(artifacts, "FEW_BATCHES", few_batches)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 4)).astype("float32")
    y = {"kind": rng.integers(0, 3, samples), "size": rng.normal(size=(samples, 1)).astype("float32")}
    prepared = Prepared(splits={"test": ArraySplit({"x": x}, y)})
    for regularizer in (None, "l2"):
        inputs = keras.Input((4,), name="x")
        hidden = keras.layers.Dense(8, activation="relu", kernel_regularizer=regularizer)(inputs)
        outputs = [
            keras.layers.Dense(3, activation="softmax", name="kind")(hidden),
            keras.layers.Dense(1, name="size")(hidden),
        ]
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer="adam",
            loss={"kind": "sparse_categorical_crossentropy", "size": "mse"},
            loss_weights={"kind": 1.0, "size": 0.3},
            metrics={"kind": ["accuracy"], "size": ["mae"]},
            steps_per_execution=4,
        )
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        got = evaluate_and_predict(model, prepared, "test", ["kind", "size"], ["x"], 16, {})
        assert set(got.metrics) == set(expected)
        for key, value in expected.items():
            assert got.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        np.testing.assert_allclose(got.predicted["kind"], model.predict(x, verbose=0)[0], rtol=1e-5, atol=1e-6)
        assert np.array_equal(got.targets["kind"], y["kind"])


@pytest.mark.parametrize("few_batches", [32, 0], ids=["one-step", "keras-loops"])
def test_one_output_scored_in_one_step_gives_keras_evaluate_numbers(monkeypatch, few_batches):
    """One output, Keras' loss and metrics, 50 samples in batches of 16 (a smaller last one): the split is scored
    in one step (engine.scoring_batch) and gives `evaluate`'s loss, accuracy and AUC."""
    import keras

    from dlrun.data.prepare import ArraySplit, Prepared
    from dlrun.engine import artifacts
    from dlrun.engine.artifacts import evaluate_and_predict

    monkeypatch.setattr(artifacts, "FEW_BATCHES", few_batches)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 4)).astype("float32"), rng.integers(0, 2, (50, 1)).astype("float32")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="y")(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", keras.metrics.AUC(name="auc")])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    got = evaluate_and_predict(
        model, Prepared(splits={"test": ArraySplit({"x": x}, {"y": y})}), "test", ["y"], ["x"], 16, {}
    )
    assert set(got.metrics) == set(expected) == {"loss", "accuracy", "auc"}
    for key, value in expected.items():
        assert got.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def _batch_max(y_true, y_pred):
    """A metric of one value per batch: its mean over batches depends on how the split is cut."""
    import keras

    return keras.ops.max(y_pred)


def _compile_config(loss, metrics, outputs=1):
    import keras

    inputs = keras.Input((4,), name="x")
    heads = [keras.layers.Dense(1, activation="sigmoid", name=f"y{i}")(inputs) for i in range(outputs)]
    model = keras.Model(inputs, heads[0] if outputs == 1 else heads)
    model.compile(optimizer="adam", loss=loss, metrics=metrics)
    return model.get_compile_config()


def _scoring_cases():
    import keras

    return {
        "keras names": ("binary_crossentropy", ["accuracy", "mae"], True),
        "keras classes": (keras.losses.BinaryCrossentropy(), [keras.metrics.AUC(), keras.metrics.Precision()], True),
        "keras function by name in a wrapper": ("mse", [keras.metrics.MeanMetricWrapper(fn="mae")], True),
        "mean reduction": (keras.losses.MeanSquaredError(reduction="mean"), [], True),
        "sum reduction": (keras.losses.BinaryCrossentropy(reduction="sum"), ["accuracy"], False),
        "dice by name": ("dice", ["accuracy"], False),
        "dice class": (keras.losses.Dice(), ["accuracy"], False),
        "custom loss": (_batch_max, ["accuracy"], False),
        "custom metric": ("binary_crossentropy", [_batch_max], False),
        "custom metric in a wrapper": ("binary_crossentropy", [keras.metrics.MeanMetricWrapper(fn=_batch_max)], False),
    }


@pytest.mark.parametrize(
    "case",
    [
        "keras names",
        "keras classes",
        "keras function by name in a wrapper",
        "mean reduction",
        "sum reduction",
        "dice by name",
        "dice class",
        "custom loss",
        "custom metric",
        "custom metric in a wrapper",
    ],
)
def test_whole_split_is_scored_in_one_step_only_when_batching_cannot_change_the_numbers(case):
    """engine.scoring_batch: Keras' per-sample losses (mean reductions) and Keras' metrics score a split in one
    step; Dice, a `sum` reduction or anything custom is scored in evaluation batches, as `evaluate` cuts it."""
    from dlrun.engine.scoring_batch import scoring_batch_size

    loss, metrics, whole = _scoring_cases()[case]
    predicted, targets = {"y0": np.zeros((100, 1), "float32")}, {"y0": np.zeros((100, 1), "float32")}
    size = scoring_batch_size(_compile_config(loss, metrics), {}, predicted, targets, 16)
    assert size == (100 if whole else 16)


def test_scoring_batch_names_a_custom_object_and_caps_the_step(monkeypatch):
    """A Keras name the recipe's imports shadow is scored in batches; several outputs are scored whole only when
    every evaluation batch is whole; large predictions are scored in steps of whole batches under the cap."""
    from dlrun.engine import scoring_batch
    from dlrun.engine.scoring_batch import scoring_batch_size

    config = _compile_config("binary_crossentropy", ["accuracy"], outputs=2)
    two = {f"y{i}": np.zeros((96, 1), "float32") for i in range(2)}
    assert scoring_batch_size(config, {}, two, two, 16) == 96
    assert scoring_batch_size(config, {"binary_crossentropy": _batch_max}, two, two, 16) == 16
    uneven = {name: value[:90] for name, value in two.items()}
    assert scoring_batch_size(config, {}, uneven, uneven, 16) == 16
    monkeypatch.setattr(scoring_batch, "SCORING_BYTES", 40 * 16)  # a row is 16 bytes: 40 rows fit, 32 whole
    assert scoring_batch_size(config, {}, two, two, 16) == 32
    assert scoring_batch_size(config, {}, uneven, uneven, 16) == 16


@pytest.mark.parametrize("few_batches", [32, 0], ids=["batch-by-batch", "keras-loops"])
def test_one_pass_evaluation_keeps_keras_numbers_for_batch_dependent_losses(monkeypatch, few_batches):
    """Dice and a metric of one value per batch give other numbers on the whole split than `evaluate`'s batches:
    evaluate_and_predict still gives `evaluate`'s, and one step over the split would not (checked)."""
    import keras

    from dlrun.data.prepare import ArraySplit, Prepared
    from dlrun.engine import artifacts
    from dlrun.engine.artifacts import evaluate_and_predict, metrics_on_predictions

    monkeypatch.setattr(artifacts, "FEW_BATCHES", few_batches)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4)).astype("float32")
    y = rng.integers(0, 2, (80, 1)).astype("float32")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="y")(inputs))
    model.compile(optimizer="adam", loss="dice", metrics=[_batch_max])
    expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    prepared = Prepared(splits={"test": ArraySplit({"x": x}, {"y": y})})
    custom = {"_batch_max": _batch_max}  # as the recipe's imports provide it
    got = evaluate_and_predict(model, prepared, "test", ["y"], ["x"], 16, custom)
    for key, value in expected.items():
        assert got.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    whole = metrics_on_predictions(model, got.predicted, got.targets, 80, custom)
    assert whole["loss"] != pytest.approx(expected["loss"], rel=1e-3)
    assert whole["_batch_max"] != pytest.approx(expected["_batch_max"], rel=1e-3)


@pytest.mark.parametrize("way", ["few-batches", "keras-loop", "streamed"])
def test_split_with_a_smaller_last_batch_is_predicted_with_one_trace(monkeypatch, tmp_path, way):
    """The last of 4 batches holds 2 rows: predicted padded to a whole batch (its extra rows dropped), the model
    is traced once, as `evaluate` traces it, not a second time for the smaller shape (issue 21: ~1.5 s CPU for
    MobileNetV2). The predictions are `model.predict`'s, in the split's order."""
    import keras

    from dlrun.data.prepare import prepare
    from dlrun.engine import artifacts
    from dlrun.engine.artifacts import predict_split
    from dlrun.recipe.schema import DataSpec

    monkeypatch.setattr(artifacts, "FEW_BATCHES", 0 if way == "keras-loop" else 32)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)).astype("float32")
    labels = rng.integers(0, 3, 50)
    rows = ["f0,f1,f2,f3,label"] + [
        ",".join([*(f"{v:.6f}" for v in r), str(c)]) for r, c in zip(x, labels, strict=True)
    ]
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = DataSpec.model_validate({
        "source": "csv", "path": "rows.csv", "stream": way == "streamed",
        "inputs": {"x": {"from": ["f0", "f1", "f2", "f3"]}}, "targets": {"y": {"from": "label"}},
    })  # fmt: skip
    prepared = prepare(spec, tmp_path, seed=0)
    assert prepared.streamed("train") == (way == "streamed")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="y")(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=1)
    predicted, targets = predict_split(model, prepared, "train", ["y"], ["x"], 16)
    traces = model.predict_function.experimental_get_tracing_count()
    feed = prepared.feed("train", ["x"], ["y"], 16, training=False)

    def named(value, name):  # one input or output comes as itself, several as a dict
        return np.asarray(value[name] if isinstance(value, dict) else value)

    if feed.streamed:
        split_x = np.concatenate([named(batch[0], "x") for batch in feed.pipeline])
        split_y = np.concatenate([named(batch[1], "y") for batch in feed.pipeline])
    else:
        split_x, split_y = named(feed.x, "x"), named(feed.y, "y")
    assert len(split_x) == 50 and np.array_equal(targets["y"], split_y)
    np.testing.assert_allclose(predicted["y"], model.predict(split_x, batch_size=16, verbose=0), rtol=1e-5, atol=1e-6)
    assert traces == 1
