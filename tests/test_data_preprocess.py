"""Preprocessing layers declared per input: adapted on the training split only, inside the saved model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrun.api import load_recipe
from dlrun.data.prepare import prepare
from dlrun.data.preprocess import application_affine, attach_preprocessing
from dlrun.errors import RecipeError
from dlrun.importer import Importer
from tests.conftest import write_recipe
from tests.test_data_sources import sklearn_csv, sklearn_frame, write_csv

IRIS = [n for n in sklearn_frame("iris")[0]]


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("iris")
    sklearn_csv(folder, "iris")
    return folder


def recipe_text(data: dict, inputs: dict, layers: list, loss: str = "sparse_categorical_crossentropy") -> str:
    doc = {
        "name": "pre",
        "seed": 1,
        "data": data,
        "model": {"inputs": inputs, "layers": layers},
        "compile": {"optimizer": "adam", "loss": loss, "metrics": ["accuracy"]},
        "train": {"epochs": 1, "batch_size": 16},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def wrapped(folder: Path, text: str):
    """(model with preprocessing, prepared data, loaded recipe) without training."""
    from dlrun.graph.build import build_graph

    loaded = load_recipe(write_recipe(folder, text, "pre.yaml"))
    prepared = prepare(loaded.recipe.data, loaded.base_dir, loaded.recipe.seed)
    importer = Importer([], loaded.base_dir)
    model = build_graph(loaded.graph, importer, doc=loaded.doc, base_dir=loaded.base_dir)
    return attach_preprocessing(model, loaded, prepared, importer), prepared, loaded


def _iris_data(preprocess: list, stream: bool = False, **extra) -> dict:
    return {
        "source": "csv",
        "path": "iris.csv",
        "stream": stream,
        "inputs": {"x": {"from": IRIS, "preprocess": preprocess}},
        "targets": {"y": {"from": "label"}},
        **extra,
    }


HEAD = [{"name": "y", "type": "Dense", "units": 3, "activation": "softmax"}]


@pytest.mark.parametrize("stream", [False, True], ids=["in_memory", "streamed"])
def test_normalization_statistics_come_from_the_training_split_only(iris_dir, stream):
    text = recipe_text(
        _iris_data([{"type": "Normalization"}], stream=stream, validation_split=0.3, test_split=0.2, stratify=True),
        {"x": {"shape": [4]}},
        HEAD,
    )
    model, _, loaded = wrapped(iris_dir, text)
    memory = prepare(loaded.recipe.data.model_copy(update={"stream": False}), iris_dir, seed=1)
    train = memory.splits["train"][0]["x"].astype("float64")
    everything = sklearn_frame("iris")[1]
    assert len(train) == 84  # 150 - 30 test - 36 validation
    layer = model.get_layer("x_normalization")
    mean, var = np.asarray(layer.mean).reshape(-1), np.asarray(layer.variance).reshape(-1)
    np.testing.assert_allclose(mean, train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(var, train.var(axis=0), rtol=1e-4)
    assert not np.allclose(mean, everything.mean(axis=0), rtol=1e-3)  # the held-out rows did not count
    # the numbers themselves: sepal length's mean over the 84 training rows
    assert mean[0] == pytest.approx(float(np.mean(train[:, 0])), rel=1e-6)


def test_min_max_scaling_maps_the_training_range_to_0_1(iris_dir):
    text = recipe_text(_iris_data(["MinMaxScaling"]), {"x": {"shape": [4]}}, HEAD)
    model, prepared, _ = wrapped(iris_dir, text)
    x = prepared.splits["train"][0]["x"]
    scale = model.get_layer("x_min_max_scaling")
    out = np.asarray(scale(x))
    np.testing.assert_allclose(out.min(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=0), 1, atol=1e-6)


def test_lookup_one_hot_and_text_vectorization(tmp_path):
    rows = [[c, f"word{i % 5} common", i % 2] for i, c in enumerate(["red", "green", "blue", "red"] * 5)]
    write_csv(tmp_path / "t.csv", ["colour", "note", "y"], rows)
    data = {
        "source": "csv",
        "path": "t.csv",
        "inputs": {
            "colour": {
                "from": "colour",
                "preprocess": [{"type": "StringLookup"}, {"type": "CategoryEncoding", "output_mode": "one_hot"}],
            },
            "note": {"from": "note", "preprocess": [{"type": "TextVectorization", "output_mode": "multi_hot"}]},
        },
        "targets": {"y": {"from": "y"}},
    }
    layers = [
        {"name": "both", "type": "Concatenate", "inputs": ["colour", "note"]},
        {"name": "y", "type": "Dense", "units": 1, "activation": "sigmoid"},
    ]
    text = recipe_text(data, {"colour": {"shape": [4]}, "note": {"shape": [7]}}, layers, loss="binary_crossentropy")
    model, _, _ = wrapped(tmp_path, text)
    lookup = model.get_layer("colour_string_lookup")
    assert lookup.get_vocabulary()[:2] == ["[UNK]", "red"] and len(lookup.get_vocabulary()) == 4  # by frequency
    assert model.get_layer("colour_category_encoding").num_tokens == 4
    vocab = model.get_layer("note_text_vectorization").get_vocabulary()
    assert vocab[:2] == ["[UNK]", "common"] and len(vocab) == 7  # [UNK], common, word0..word4
    raw = {"colour": np.array(["red", "purple"], dtype=object), "note": np.array(["word1 common", "x"], dtype=object)}
    out = model.predict(raw, verbose=0)  # raw strings in (Keras' predict takes text as object arrays)
    assert out.shape == (2, 1)


@pytest.mark.parametrize("application", ["MobileNetV2", "ResNet50", "DenseNet121", "EfficientNetB0"])
def test_preprocess_input_as_layers_equals_keras_function(application):
    import inspect

    import keras

    pre = inspect.getmodule(getattr(keras.applications, application)).preprocess_input
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 5, 5, 3)).astype("float32")
    flip, scale, offset = application_affine(application, 3, ("data",))
    got = (images[..., ::-1] if flip else images) * scale + offset
    np.testing.assert_allclose(got, np.asarray(pre(images.copy())), rtol=1e-4, atol=1e-3)
    assert flip == (application == "ResNet50")  # caffe mode: RGB -> BGR


def test_augmentation_acts_in_training_only(tmp_path):
    from tests.test_data_sources import image_folder

    image_folder(tmp_path / "img", per_class=2, size=8, splits=("train",))
    data = {
        "source": "images",
        "path": "img",
        "image_size": [8, 8],
        "inputs": {
            "image": {
                "from": "image",
                "preprocess": [
                    {"type": "RandomFlip", "mode": "horizontal_and_vertical", "seed": 1},
                    {"type": "preprocess_input", "application": "MobileNetV2"},
                ],
            }
        },
        "targets": {"colour": {"from": "label"}},
    }
    layers = [{"type": "Flatten"}, {"name": "colour", "type": "Dense", "units": 3, "activation": "softmax"}]
    model, _, _ = wrapped(tmp_path, recipe_text(data, {"image": {"shape": [8, 8, 3]}}, layers))
    assert [layer.name for layer in model.layers[:3]] == ["image", "image_random_flip", "image_preprocess_input"]
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 8, 8, 3)).astype("float32")
    inference = np.asarray(model(x, training=False))
    np.testing.assert_allclose(inference, np.asarray(model(x, training=False)))
    rescaled = np.asarray(model.get_layer("image_preprocess_input")(x))
    np.testing.assert_allclose(rescaled, x / 127.5 - 1, rtol=1e-5, atol=1e-5)
    trained = [np.asarray(model(x, training=True)) for _ in range(4)]
    assert any(not np.allclose(t, inference) for t in trained)


# ----------------------------------------------------------------------------------------------------
# data vs model: one-line errors with the key path


def _error(folder: Path, text: str) -> str:
    with pytest.raises(RecipeError) as err:
        wrapped(folder, text)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_feature_shape_must_match_the_model_input(iris_dir):
    text = recipe_text(_iris_data([]), {"x": {"shape": [3]}}, HEAD)
    assert (
        _error(iris_dir, text) == "data.inputs.x: the data gives samples of shape (4,) but model input 'x' expects (3,)"
    )
    text = recipe_text(_iris_data([{"type": "Normalization"}]), {"x": {"shape": [5]}}, HEAD)
    assert "(4,) after preprocessing but model input 'x' expects (5,)" in _error(iris_dir, text)


def test_label_count_must_match_the_output_units(iris_dir):
    head = [{"name": "y", "type": "Dense", "units": 2, "activation": "softmax"}]
    text = recipe_text(_iris_data([]), {"x": {"shape": [4]}}, head)
    assert _error(iris_dir, text) == "data.targets.y: labels have 3 classes (0..2) but output 'y' has 2 units"
    text = recipe_text(_iris_data([]), {"x": {"shape": [4]}}, HEAD, loss="categorical_crossentropy")
    assert "add `steps: [one_hot: 3]`" in _error(iris_dir, text)
    data = _iris_data([])
    data["targets"]["y"]["steps"] = [{"one_hot": 3}]
    text = recipe_text(data, {"x": {"shape": [4]}}, head, loss="categorical_crossentropy")
    assert _error(iris_dir, text).startswith("data.targets.y: targets have 3 values per sample (shape (3,))")


def test_text_without_a_vectorizing_layer_is_an_error(tmp_path):
    write_csv(tmp_path / "t.csv", ["note", "y"], [["good", 1], ["bad", 0]])
    data = {"source": "csv", "path": "t.csv", "inputs": {"note": {"from": "note"}}, "targets": {"y": {"from": "y"}}}
    head = [{"name": "y", "type": "Dense", "units": 1, "activation": "sigmoid"}]
    text = recipe_text(data, {"note": {"shape": [1]}}, head, loss="binary_crossentropy")
    assert _error(tmp_path, text).startswith("data.inputs.note: input 'note' receives text; add a preprocess layer")


def test_unknown_preprocessing_layer_did_you_mean(iris_dir):
    text = recipe_text(_iris_data([{"type": "Normalisation"}]), {"x": {"shape": [4]}}, HEAD)
    assert _error(iris_dir, text) == (
        "data.inputs.x.preprocess[0].type: unknown preprocessing layer 'Normalisation' (did you mean 'Normalization'?)"
    )


def test_a_vocabulary_narrower_than_max_tokens_is_a_located_error_that_names_pad_to_max_tokens(cli, tmp_path):
    """recipes/imdb.yaml with data.limit=256 found 7,241 words for max_tokens 10,000: the model input did not
    match, and the error carried no file:line:column (errors raised after loading were not located)."""
    rows = [[f"word{i % 7} common", i % 2] for i in range(40)]
    write_csv(tmp_path / "t.csv", ["note", "y"], rows)
    vectorize = {"type": "TextVectorization", "max_tokens": 20, "output_mode": "multi_hot"}
    data = {
        "source": "csv",
        "path": "t.csv",
        "inputs": {"note": {"from": "note", "preprocess": [vectorize]}},
        "targets": {"y": {"from": "y"}},
    }
    layers = [{"name": "y", "type": "Dense", "units": 1, "activation": "sigmoid"}]
    text = recipe_text(data, {"note": {"shape": [20]}}, layers, loss="binary_crossentropy")
    recipe = write_recipe(tmp_path, text)
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"))
    assert result.code == 2 and "Traceback" not in result.stderr
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip() == "note:")
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {recipe}:{line + 1}:7: data.inputs.note: the data gives samples of shape (9,) after preprocessing "
        "but model input 'note' expects (20,); the vocabulary adapted on the training data is smaller than "
        "max_tokens: set pad_to_max_tokens: true on the vocabulary layer so the width is always max_tokens"
    )
    assert not (tmp_path / "runs").exists()
    padded = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), "--set",
                 "data.inputs.note.preprocess[0].pad_to_max_tokens=true")  # fmt: skip
    assert padded.code == 0, padded.stderr[-2000:]
