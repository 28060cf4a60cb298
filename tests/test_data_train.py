"""Training on file data: saved models take raw input in a fresh process, k-fold cross-validation,
streaming a CSV larger than the memory budget, and the imdb / flowers recipes end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrun import api
from tests.conftest import RECIPES, write_recipe
from tests.test_data_sources import image_folder, sklearn_csv, sklearn_frame

IRIS = sklearn_frame("iris")[0]


def _iris_recipe(folder: Path, epochs: int = 30) -> Path:
    doc = {
        "name": "iris_csv",
        "seed": 0,
        "data": {
            "source": "csv",
            "path": "iris.csv",
            "test_split": 0.2,
            "stratify": True,
            "inputs": {
                "sepal": {"from": IRIS[:2], "preprocess": [{"type": "Normalization"}]},
                "petal": {"from": IRIS[2:], "preprocess": [{"type": "Normalization"}]},
            },
            "targets": {"species": {"from": "label"}},  # class_0, class_1, class_2 (text)
        },
        "model": {
            "inputs": {"sepal": {"shape": [2]}, "petal": {"shape": [2]}},
            "layers": [
                {"name": "both", "type": "Concatenate", "inputs": ["sepal", "petal"]},
                {"name": "hidden", "type": "Dense", "units": 16, "activation": "relu"},
                {"name": "species", "type": "Dense", "units": 3, "activation": "softmax"},
            ],
        },
        "compile": {
            "optimizer": {"type": "Adam", "learning_rate": 0.05},
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
        },
        "train": {"epochs": epochs, "batch_size": 16},
    }
    return write_recipe(folder, yaml.safe_dump(doc, sort_keys=False), "iris_csv.yaml")


def _image_recipe(folder: Path) -> Path:
    doc = {
        "name": "colours",
        "seed": 0,
        "data": {
            "source": "images",
            "path": "colours",
            "image_size": [8, 8],
            "inputs": {
                "image": {
                    "from": "image",
                    "preprocess": [
                        {"type": "RandomFlip", "mode": "horizontal"},
                        {"type": "Rescaling", "scale": 0.00392156862745098},
                    ],
                }
            },
            "targets": {"colour": {"from": "label"}},
        },
        "model": {
            "inputs": {"image": {"shape": [8, 8, 3]}},
            "layers": [
                {"type": "GlobalAveragePooling2D"},
                {"name": "colour", "type": "Dense", "units": 3, "activation": "softmax"},
            ],
        },
        "compile": {
            "optimizer": {"type": "Adam", "learning_rate": 0.1},
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
        },
        "train": {"epochs": 8, "batch_size": 8},
    }
    return write_recipe(folder, yaml.safe_dump(doc, sort_keys=False), "colours.yaml")


PREDICT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras, tensorflow as tf
    args = json.loads(sys.argv[1])
    iris = keras.saving.load_model(args["iris"])
    rows = np.array(args["rows"], dtype="float32")
    p_iris = iris.predict({"sepal": rows[:, :2], "petal": rows[:, 2:]}, verbose=0)
    colours = keras.saving.load_model(args["colours"])
    images = np.stack([tf.io.decode_png(tf.io.read_file(f), channels=3).numpy() for f in args["images"]])
    p_img = colours.predict(images, verbose=0)  # raw uint8 pixels
    print(json.dumps({"iris": p_iris.tolist(), "colours": p_img.tolist(), "dlrun": "dlrun" in sys.modules}))
    """
)


@pytest.mark.slow
def test_models_trained_on_raw_csv_and_images_predict_raw_input_in_a_fresh_process(tmp_path):
    sklearn_csv(tmp_path, "iris")
    image_folder(tmp_path / "colours", per_class=6, size=8)
    iris = api.train(api.load_recipe(_iris_recipe(tmp_path)), runs_root=tmp_path / "runs", quiet=True)
    colours = api.train(api.load_recipe(_image_recipe(tmp_path)), runs_root=tmp_path / "runs", quiet=True)
    assert iris.metrics["accuracy"] >= 0.85 and colours.metrics["accuracy"] == 1.0

    _, x, y = sklearn_frame("iris")
    chosen = [0, 1, 50, 51, 100, 101]
    images = sorted(str(p) for p in (tmp_path / "colours" / "test").rglob("*.png"))[::3]
    args = {
        "iris": str(iris.run.model),
        "colours": str(colours.run.model),
        "rows": x[chosen].tolist(),
        "images": images,
    }
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, json.dumps(args)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fresh["dlrun"] is False  # plain Keras: the preprocessing is inside model.keras
    rows = x[chosen].astype("float32")
    here = iris.model.predict({"sepal": rows[:, :2], "petal": rows[:, 2:]}, verbose=0)
    np.testing.assert_allclose(fresh["iris"], here, rtol=1e-4, atol=1e-5)
    assert np.argmax(fresh["iris"], axis=1).tolist() == y[chosen].tolist()
    truth = [["blue", "green", "red"].index(Path(f).parent.name) for f in images]
    assert np.argmax(fresh["colours"], axis=1).tolist() == truth


# ----------------------------------------------------------------------------------------------------
# slow: streaming memory, real recipes end to end

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import dlrun.api as api

    def mib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024

    out = {}
    for label, path in (("warm", "small.csv"), ("small", "small.csv"), ("big", "big.csv")):
        result = api.train(api.load_recipe(sys.argv[1], [f"data.path={path}"]), runs_root=Path("runs"), quiet=True)
        out[label] = {"peak": mib("VmHWM"), "rss": mib("VmRSS"), "accuracy": result.history["val_accuracy"][-1]}
    print(json.dumps(out))
    """
)


def _write_numbers(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        fh.write(",".join([f"f{i}" for i in range(10)] + ["y"]) + "\n")
        for start in range(0, n, 50000):
            x = rng.normal(size=(min(50000, n - start), 10))
            block = np.column_stack([x, (x[:, 0] + x[:, 1] > 0).astype(int)])
            np.savetxt(fh, block, fmt=["%.5f"] * 10 + ["%d"], delimiter=",")


@pytest.mark.slow
def test_a_csv_larger_than_the_memory_budget_streams_with_bounded_memory(tmp_path):
    _write_numbers(tmp_path / "big.csv", 300_000)  # about 26 MB of text; 13x the budget below
    _write_numbers(tmp_path / "small.csv", 15_000)
    size_mb = (tmp_path / "big.csv").stat().st_size / 2**20
    doc = {
        "name": "stream",
        "seed": 0,
        "data": {
            "source": "csv",
            "path": "big.csv",
            "memory_budget_mb": 2,
            "validation_split": 0.1,
            "inputs": {"x": {"from": [f"f{i}" for i in range(10)], "preprocess": [{"type": "Normalization"}]}},
            "targets": {"y": {"from": "y"}},
        },
        "model": {
            "inputs": {"x": {"shape": [10]}},
            "layers": [
                {"name": "h", "type": "Dense", "units": 16, "activation": "relu"},
                {"name": "y", "type": "Dense", "units": 1, "activation": "sigmoid"},
            ],
        },
        "compile": {"optimizer": "adam", "loss": "binary_crossentropy", "metrics": ["accuracy"]},
        "train": {"epochs": 1, "batch_size": 1024},
    }
    recipe = write_recipe(tmp_path, yaml.safe_dump(doc, sort_keys=False), "stream.yaml")
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(recipe)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    per_run = out["small"]["peak"] - out["warm"]["peak"]  # what any second run adds (new model, graphs)
    big = out["big"]["peak"] - out["small"]["peak"]
    print(f"CSV {size_mb:.1f} MiB, budget 2 MiB: peak +{big:.1f} MiB (a small run adds {per_run:.1f} MiB)")
    assert big < per_run + size_mb / 2, out  # reading the file into memory would take several times its size
    assert out["big"]["accuracy"] > 0.9  # and it learned from the stream (held-out rows of the same file)


@pytest.mark.slow
def test_imdb_recipe_on_raw_text(shared_data, tmp_path):
    loaded = api.load_recipe(RECIPES / "imdb.yaml", ["data.limit=3000", "train.epochs=2"])
    result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    assert result.metrics["accuracy"] > 0.7
    reviews = np.array(["A wonderful, moving film. Brilliant acting.", "Dull, boring and far too long."], dtype=object)
    p = result.model.predict(reviews, verbose=0)
    assert p.shape == (2, 1) and p[0, 0] > p[1, 0]


@pytest.mark.slow
def test_flowers_recipe_transfer_learning_from_the_tarball(shared_data, tmp_path):
    loaded = api.load_recipe(
        RECIPES / "flowers.yaml",
        [
            "data.image_size=[64, 64]",
            "model.inputs.image.shape=[64, 64, 3]",
            "model.layers[0].alpha=0.35",
            "train.stages[0].epochs=1",
            "train.stages[1].epochs=1",
        ],
    )
    result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    assert set(result.metrics) == {"accuracy", "loss"} and np.isfinite(result.metrics["loss"])
    names = [layer.name for layer in result.model.layers]
    assert names[:5] == ["image", "image_random_flip", "image_random_rotation", "image_random_zoom",
                         "image_preprocess_input"]  # fmt: skip
