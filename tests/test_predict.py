"""`dlrun predict RUN --input FILE`: raw npz/npy/CSV/images in, CSV/JSON predictions out, class names included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dlrun import api
from dlrun.errors import RecipeError
from tests.conftest import write_recipe

NPZ_RECIPE = """
name: pred_npz
seed: 3
data:
  source: npz
  path: data.npz
  inputs: {x: {from: x, steps: [{reshape: [4, 8]}, {standardize: true}, {reshape: [32]}]}}
  targets: {y: {from: y, steps: [{one_hot: 3}]}}
model:
  inputs: {x: {shape: [32]}}
  layers:
    - {type: Dense, units: 16, activation: relu}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile: {optimizer: adam, loss: categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 1, batch_size: 32, tensorboard: false}
"""

IRIS_RECIPE = """
name: pred_iris
seed: 0
data:
  source: csv
  path: iris.csv
  inputs:
    measurements:
      from: [sepal_length, sepal_width, petal_length, petal_width]
      preprocess: [{type: Normalization}]
  targets: {species: {from: species}}
model:
  inputs: {measurements: {shape: [4]}}
  layers:
    - {type: Dense, units: 8, activation: relu}
    - {name: species, type: Dense, units: 3, activation: softmax}
compile: {optimizer: {type: Adam, learning_rate: 0.05}, loss: sparse_categorical_crossentropy}
train: {epochs: 20, batch_size: 16, tensorboard: false}
"""

IMAGE_RECIPE = """
name: pred_images
seed: 0
data:
  source: images
  path: pictures
  image_size: [12, 12]
  inputs: {image: {from: image, steps: [{scale: {divide: 255}}]}}
  targets: {label: {from: label}}
model:
  inputs: {image: {shape: [12, 12, 3]}}
  layers:
    - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}
    - {type: GlobalAveragePooling2D}
    - {name: label, type: Dense, units: 2, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
train: {epochs: 1, batch_size: 8, tensorboard: false}
"""

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pred_npz")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 32)) * 5 + 3).astype("float32")
    y = x[:, :3].argmax(axis=1).astype("int64")
    np.savez(tmp / "data.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    result = api.train(api.load_recipe(write_recipe(tmp, NPZ_RECIPE)), runs_root=tmp / "runs", quiet=True)
    return tmp, result.run.path, x[:240], x[240:]


def _expected(run: Path, train_x: np.ndarray, new_x: np.ndarray) -> np.ndarray:
    """The model on inputs prepared by hand: standardized with the training split's statistics."""
    import keras

    mean = train_x.reshape(-1, 4, 8).mean(axis=0)
    std = train_x.reshape(-1, 4, 8).std(axis=0)
    prepared = ((new_x.reshape(-1, 4, 8) - mean) / std).reshape(-1, 32)
    return keras.saving.load_model(str(run / "model.keras")).predict(prepared, verbose=0)


def test_npz_and_npy_give_the_models_predictions_on_prepared_inputs(npz_run):
    tmp, run, train_x, new_x = npz_run
    assert (run / "classes.json").is_file() and (run / "preprocessing.npz").is_file()
    expected = _expected(run, train_x, new_x)
    np.savez(tmp / "new.npz", x=new_x)
    summary = api.predict(run, tmp / "new.npz")
    assert summary["count"] == 60 and summary["output"] == str(run / "predictions" / "new.csv")
    rows = _read_csv(run / "predictions" / "new.csv")
    assert list(rows[0]) == ["row", "y", "P(y=0)", "P(y=1)", "P(y=2)"]
    got = np.array([[float(r[f"P(y={k})"]) for k in range(3)] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [int(r["y"]) for r in rows] == expected.argmax(axis=1).tolist()

    np.save(tmp / "new.npy", new_x)
    out = tmp / "out.json"
    api.predict(run, tmp / "new.npy", output=out)
    doc = json.loads(out.read_text())
    assert doc["outputs"] == {"y": {"kind": "softmax", "classes": ["0", "1", "2"]}}
    probs = np.array([list(p["y"]["probabilities"].values()) for p in doc["predictions"]])
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert doc["predictions"][0]["row"] == 0 and doc["predictions"][0]["y"]["class"] in ("0", "1", "2")

    # an older run without the saved state: the statistics are re-derived from the training data
    for name in ("classes.json", "preprocessing.npz"):
        (run / name).rename(tmp / name)
    try:
        api.predict(run, tmp / "new.npz", output=tmp / "again.csv")
    finally:
        for name in ("classes.json", "preprocessing.npz"):
            (tmp / name).rename(run / name)
    again = np.array([[float(r[f"P(y={k})"]) for k in range(3)] for r in _read_csv(tmp / "again.csv")])
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-6)


def test_errors_are_one_line_and_actionable(npz_run):
    tmp, run, _, new_x = npz_run
    np.savez(tmp / "wrong_key.npz", xs=new_x)
    np.savez(tmp / "wrong_shape.npz", x=new_x[:, :30])
    (tmp / "notes.txt").write_text("hello")
    cases = [
        (tmp / "absent.npz", {}, "input file not found"),
        (tmp / "notes.txt", {}, "unsupported file type"),
        (tmp / "wrong_key.npz", {}, "has no key 'x' (did you mean 'xs'?)"),
        (tmp / "wrong_shape.npz", {}, "cannot reshape samples of shape (30,) to (4, 8)"),
        (tmp / "wrong_key.npz", {"output": tmp / "out.txt"}, "written as .csv or .json"),
    ]
    for file, kwargs, message in cases:
        with pytest.raises(RecipeError, match=None) as info:
            api.predict(run, file, **kwargs)
        assert message in str(info.value) and "\n" not in str(info.value)
    np.savez(tmp / "twice.npz", x=new_x)
    api.predict(run, tmp / "twice.npz", output=tmp / "twice.csv")
    with pytest.raises(RecipeError, match="exists; pass --overwrite"):
        api.predict(run, tmp / "twice.npz", output=tmp / "twice.csv")
    api.predict(run, tmp / "twice.npz", output=tmp / "twice.csv", overwrite=True)


def test_model_input_shape_mismatch_is_reported(tmp_path):
    recipe = NPZ_RECIPE.replace(
        "steps: [{reshape: [4, 8]}, {standardize: true}, {reshape: [32]}]", "steps: [{scale: {divide: 2}}]"
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 32)).astype("float32")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=(x[:, 0] > 0).astype("int64"))
    run = api.train(api.load_recipe(write_recipe(tmp_path, recipe)), runs_root=tmp_path / "runs", quiet=True).run.path
    np.save(tmp_path / "short.npy", x[:, :16])
    with pytest.raises(RecipeError, match=r"gives samples of shape \(16,\) .* model expects \(32,\)"):
        api.predict(run, tmp_path / "short.npy")


def test_csv_run_predicts_class_names_from_a_csv_without_the_target(tmp_path):
    import keras
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = [str(n) for n in iris.target_names]
    lines = [",".join([*COLUMNS, "species"])]
    lines += [",".join([*(f"{v:.1f}" for v in row), names[t]]) for row, t in zip(iris.data, iris.target, strict=True)]
    (tmp_path / "iris.csv").write_text("\n".join(lines) + "\n")
    run = api.train(api.load_recipe(write_recipe(tmp_path, IRIS_RECIPE)), runs_root=tmp_path / "runs", quiet=True)
    new = tmp_path / "flowers.csv"
    new.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    summary = api.predict(run.run.path, new, output=tmp_path / "flowers.csv.out.csv")
    assert summary["outputs"] == {"species": {"kind": "softmax", "classes": sorted(names)}}
    rows = _read_csv(tmp_path / "flowers.csv.out.csv")
    assert len(rows) == 150
    assert list(rows[0])[:3] == ["row", "species", f"P(species={sorted(names)[0]})"]
    assert {f"P(species={n})" for n in names} <= set(rows[0])
    assert {r["species"] for r in rows} <= set(names)
    # preprocess layers live in the model: it takes the raw columns, and predict does not apply them twice
    expected = keras.saving.load_model(str(run.run.path / "model.keras")).predict(iris.data.round(1), verbose=0)
    got = np.array([[float(r[f"P(species={n})"]) for n in sorted(names)] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    accuracy = np.mean([r["species"] == names[t] for r, t in zip(rows, iris.target, strict=True)])
    assert accuracy > 0.8

    new.write_text("sepal_length,sepal_width,petal_length,petal_wdth\n5.1,3.5,1.4,0.2\n")
    with pytest.raises(RecipeError, match=r"has no column 'petal_width' \(did you mean 'petal_wdth'\?\)"):
        api.predict(run.run.path, new, overwrite=True)


def test_rows_for_binary_multilabel_and_regression_outputs():
    from dlrun.verbs.predict import Predictions, to_records, to_table

    pred = Predictions(
        "row",
        [0, 1],
        {
            "spam": np.array([[0.75], [0.25]], "float32"),
            "tags": np.array([[0.9, 0.1, 0.6], [0.2, 0.3, 0.4]], "float32"),
            "price": np.array([[1.5], [2.25]], "float32"),
            "box": np.array([[1, 2], [3, 4]], "float32"),
        },
        {"spam": "binary", "tags": "multilabel", "price": "regression", "box": "regression"},
        {"spam": ["ham", "spam"], "tags": ["a", "b", "c"]},
    )
    header, rows = to_table(pred)
    assert header == ["row", "spam", "P(spam=spam)", "tags", "P(tags=a)", "P(tags=b)", "P(tags=c)", "price",
                      "box[0]", "box[1]"]  # fmt: skip
    assert rows[0] == ["0", "spam", "0.75", "a|c", "0.9", "0.1", "0.6", "1.5", "1.0", "2.0"]
    assert rows[1][1:3] == ["ham", "0.25"] and rows[1][3] == ""
    records = to_records(pred)
    assert records[1]["spam"] == {"class": "ham", "probabilities": {"spam": 0.25}}  # P(positive), never P(ham)
    assert records[0]["tags"] == {"classes": ["a", "c"], "probabilities": {"a": 0.9, "b": 0.1, "c": 0.6}}
    assert records[0]["price"] == {"value": 1.5} and records[1]["box"] == {"value": [3.0, 4.0]}


def _png(path: Path, color: tuple[int, int, int], seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-30, 30, size=(12, 12, 3)), 0, 255).astype("uint8")
    Image.fromarray(pixels).save(path)


@pytest.mark.slow
def test_image_folder_run_predicts_one_image_and_a_folder(tmp_path, npz_run):
    import keras

    for label, color in (("blue", (20, 20, 220)), ("red", (220, 20, 20))):
        (tmp_path / "pictures" / label).mkdir(parents=True)
        for i in range(6):
            _png(tmp_path / "pictures" / label / f"{i}.png", color, i)
    run = api.train(api.load_recipe(write_recipe(tmp_path, IMAGE_RECIPE)), runs_root=tmp_path / "runs", quiet=True)
    run_path = run.run.path
    assert json.loads((run_path / "classes.json").read_text()) == {"label": ["blue", "red"]}
    new = tmp_path / "new"
    new.mkdir()
    _png(new / "a.png", (20, 20, 220), 100)
    _png(new / "b.png", (220, 20, 20), 101)

    one = api.predict(run_path, new / "a.png", output=tmp_path / "one.json")
    assert one["count"] == 1
    doc = json.loads((tmp_path / "one.json").read_text())
    assert doc["predictions"][0]["file"] == "a.png" and doc["predictions"][0]["label"]["class"] in ("blue", "red")

    api.predict(run_path, new)
    rows = _read_csv(run_path / "predictions" / "new.csv")
    assert [r["file"] for r in rows] == ["a.png", "b.png"]
    assert list(rows[0]) == ["file", "label", "P(label=blue)", "P(label=red)"]
    from PIL import Image

    pixels = np.stack(
        [np.asarray(Image.open(new / n).convert("RGB"), dtype="float32") / 255 for n in ("a.png", "b.png")]
    )
    expected = keras.saving.load_model(str(run_path / "model.keras")).predict(pixels, verbose=0)
    got = np.array([[float(r["P(label=blue)"]), float(r["P(label=red)"])] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(RecipeError, match="images feed recipes whose data reads an image folder"):
        api.predict(npz_run[1], new / "a.png")


def test_cli_predict_in_a_fresh_process(cli, npz_run):
    tmp, run, _, new_x = npz_run
    np.savez(tmp / "cli.npz", x=new_x[:5])
    out = tmp / "cli.json"
    result = cli("predict", str(run), "--input", str(tmp / "cli.npz"), "--output", str(out), "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["count"] == 5 and summary["output"] == str(out)
    assert len(json.loads(out.read_text())["predictions"]) == 5
    again = cli("predict", str(run), "--input", str(tmp / "cli.npz"), "--output", str(out))
    assert again.code == 2 and "exists; pass --overwrite" in again.stderr
