"""Whole `dlrun train` runs against the same job written by hand in plain Keras: process CPU time and peak memory.

Each row runs both sides as separate processes (fit, evaluate on the test split, save the model: the job
`dlrun train` does), alternating them `--rounds` times, and prints the medians and the ratios
dlrun / hand-written (targets: CPU <= 1.05x, peak memory <= 1.1x; the tiny tabular run's difference is
dlrun's fixed cost, target <= 1 s of CPU). Rows:

- png: MNIST digits as PNG files in class folders, an MLP, 3 epochs (`keras.utils.image_dataset_from_directory`);
- jpeg: CIFAR-like 32x32 RGB JPEG files, a small CNN, 2 epochs;
- transfer: MobileNetV2 (`weights: null`) on 64x64 JPEG files, frozen for one epoch, then fine-tuned for one
  at a lower rate (two compiles on both sides);
- tabular: scikit-learn's wine (178 rows), an MLP, 20 epochs: almost all fixed cost. Measured a second way
  too (twins.fixed_cost): both jobs in processes that have already imported TensorFlow, timed in-process up to
  their last line, so the ±1.5 s CPU spread of importing TensorFlow on a shared machine drops out.

The images are written from MNIST (`mnist.npz` under $DLRUN_DATA_DIR or Keras' cache) into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.twins import ROOT, Row, compare, dlrun, fixed_cost, image_folder, python

# ----------------------------------------------------------------------------------------------------
# the hand-written twins: argv = folder, model path

FOLDER_MLP = """
import sys, keras
keras.utils.set_random_seed(0)
root, out = sys.argv[1:3]
kw = dict(color_mode="grayscale", image_size=(28, 28), batch_size=128, verbose=False)
train = keras.utils.image_dataset_from_directory(f"{root}/train", shuffle=True, seed=0, **kw)
test = keras.utils.image_dataset_from_directory(f"{root}/test", shuffle=False, **kw)
m = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                      keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10, activation="softmax")])
m.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(train, epochs=3, verbose=0)
print(m.evaluate(test, verbose=0))
m.save(out)
"""

FOLDER_CNN = """
import sys, keras
from keras import layers
keras.utils.set_random_seed(0)
root, out = sys.argv[1:3]
kw = dict(image_size=(32, 32), batch_size=64, verbose=False)
train = keras.utils.image_dataset_from_directory(f"{root}/train", shuffle=True, seed=0, **kw)
test = keras.utils.image_dataset_from_directory(f"{root}/test", shuffle=False, **kw)
m = keras.Sequential([keras.Input((32, 32, 3)), layers.Rescaling(1 / 255),
                      layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
                      layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
                      layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")])
m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(train, epochs=2, verbose=0)
print(m.evaluate(test, verbose=0))
m.save(out)
"""

TRANSFER = """
import sys, keras
from keras import layers
keras.utils.set_random_seed(0)
root, out = sys.argv[1:3]
kw = dict(image_size=(64, 64), batch_size=32, verbose=False)
train = keras.utils.image_dataset_from_directory(f"{root}/train", shuffle=True, seed=0, **kw)
test = keras.utils.image_dataset_from_directory(f"{root}/test", shuffle=False, **kw)
inputs = keras.Input((64, 64, 3))
x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
backbone = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
outputs = layers.Dense(10, activation="softmax", name="digit")(backbone(x))
m = keras.Model(inputs, outputs)
backbone.trainable = False
m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(train, epochs=1, verbose=0)
backbone.trainable = True
m.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(train, epochs=2, initial_epoch=1, verbose=0)
print(m.evaluate(test, verbose=0))
m.save(out)
"""

TABULAR = """
import sys, numpy as np, keras
from sklearn.datasets import load_wine
keras.utils.set_random_seed(0)
bunch = load_wine()
x, y = bunch.data.astype("float32"), bunch.target.astype("int64")
order = np.random.default_rng(0).permutation(len(x))
test, train = order[: len(x) // 5], order[len(x) // 5 :]
x = (x - x[train].mean(0)) / x[train].std(0)
m = keras.Sequential([keras.Input((13,)), keras.layers.Dense(32, activation="relu"),
                      keras.layers.Dense(3, activation="softmax")])
m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(x[train], y[train], epochs=20, batch_size=16, verbose=0)
print(m.evaluate(x[test], y[test], verbose=0))
m.save(sys.argv[2])
"""

# ----------------------------------------------------------------------------------------------------
# the same jobs as recipes

FOLDER_MLP_RECIPE = """
name: bench_png_mlp
seed: 0
data:
  source: images
  path: {folder}
  image_size: [28, 28]
  color_mode: grayscale
  inputs: {{image: {{from: image, steps: [{{scale: {{divide: 255}}}}]}}}}
  targets: {{digit: {{from: label}}}}
model:
  inputs: {{image: {{shape: [28, 28, 1]}}}}
  layers:
    - {{type: Flatten}}
    - {{type: Dense, units: 512, activation: relu}}
    - {{name: digit, type: Dense, units: 10, activation: softmax}}
compile: {{optimizer: rmsprop, loss: sparse_categorical_crossentropy, metrics: [accuracy]}}
train: {{epochs: 3, batch_size: 128}}
eval: {{split: test}}
"""

FOLDER_CNN_RECIPE = """
name: bench_jpeg_cnn
seed: 0
data:
  source: images
  path: {folder}
  image_size: [32, 32]
  inputs: {{image: {{from: image, steps: [{{scale: {{divide: 255}}}}]}}}}
  targets: {{label: {{from: label}}}}
model:
  inputs: {{image: {{shape: [32, 32, 3]}}}}
  layers:
    - {{type: Conv2D, filters: 32, kernel_size: 3, activation: relu}}
    - {{type: MaxPooling2D}}
    - {{type: Conv2D, filters: 64, kernel_size: 3, activation: relu}}
    - {{type: MaxPooling2D}}
    - {{type: Flatten}}
    - {{type: Dense, units: 64, activation: relu}}
    - {{name: label, type: Dense, units: 10, activation: softmax}}
compile: {{optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}}
train: {{epochs: 2, batch_size: 64}}
eval: {{split: test}}
"""

TRANSFER_RECIPE = """
name: bench_transfer
seed: 0
data:
  source: images
  path: {folder}
  image_size: [64, 64]
  inputs: {{image: {{from: image}}}}
  targets: {{digit: {{from: label}}}}
model:
  inputs: {{image: {{shape: [64, 64, 3]}}}}
  layers:
    - {{type: Rescaling, scale: 0.00784313725490196, offset: -1}}
    - {{name: backbone, type: applications.MobileNetV2, weights: null, include_top: false, pooling: avg}}
    - {{name: digit, type: Dense, units: 10, activation: softmax}}
compile: {{optimizer: {{type: Adam, learning_rate: 0.001}}, loss: sparse_categorical_crossentropy, metrics: [accuracy]}}
train:
  batch_size: 32
  stages:
    - {{name: head, epochs: 1, trainable: {{freeze: [backbone]}}}}
    - {{name: fine_tune, epochs: 1, trainable: {{unfreeze: all}}, optimizer: {{type: Adam, learning_rate: 0.0001}}}}
eval: {{split: test}}
"""

TABULAR_RECIPE = """
name: bench_wine
seed: 0
data:
  source: sklearn
  name: wine
  test_split: 0.2
  inputs: {x: {from: x, steps: [{standardize: true}]}}
  targets: {y: {from: y}}
model:
  inputs: {x: {shape: [13]}}
  layers:
    - {type: Dense, units: 32, activation: relu}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 20, batch_size: 16}
eval: {split: test}
"""

ROWS = ("png", "jpeg", "transfer", "tabular")


def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from $DLRUN_DATA_DIR or Keras' cache (downloaded by Keras when neither has it)."""
    for folder in (
        os.environ.get("DLRUN_DATA_DIR"),
        os.path.expanduser("~/.keras/datasets"),
        ROOT.parent / "shared/data",
    ):
        if folder and (Path(folder) / "mnist.npz").is_file():
            with np.load(Path(folder) / "mnist.npz") as f:
                return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return x_train, y_train, x_test, y_test


def rgb(digits: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Grey digits as `size`x`size` RGB images, each tinted with a random colour (CIFAR-like files)."""
    from PIL import Image

    tint = np.random.default_rng(seed).uniform(0.3, 1.0, size=(len(digits), 1, 1, 3))
    resized = np.stack([np.asarray(Image.fromarray(d).resize((size, size), Image.BILINEAR)) for d in digits])
    return (resized[..., None] * tint).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row's image count")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = mnist()

    def count(n: int) -> int:
        return max(100, int(n * args.scale))

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-") as tmp:
        work = Path(tmp)

        def run(label: str, twin: str, recipe: str, folder: Path | None) -> Path:
            """Compare `twin` with `dlrun train` on `recipe` (written for the row); returns the recipe's path."""
            key = label.split()[0]
            path = work / f"{key}.yaml"
            path.write_text(recipe.format(folder=folder) if folder else recipe, encoding="utf-8")
            plain = python(twin, str(folder or work), str(work / f"{key}.keras"))
            ours = dlrun("train", str(path), "--runs", str(work / "runs"), "--quiet")
            rows.append(compare(label, plain, ours, args.rounds))
            return path

        if "png" in args.rows:
            n, m = count(8000), count(2000)
            folder = image_folder(
                work / "png",
                {"train": x_train[:n], "test": x_test[:m]},
                {"train": y_train[:n], "test": y_test[:m]},
                "png",
            )
            run(f"png ({n} + {m} MNIST PNG files, MLP, 3 epochs)", FOLDER_MLP, FOLDER_MLP_RECIPE, folder)
        if "jpeg" in args.rows:
            n, m = count(2000), count(500)
            images = {"train": rgb(x_train[:n], 32, 0), "test": rgb(x_test[:m], 32, 1)}
            folder = image_folder(work / "jpeg", images, {"train": y_train[:n], "test": y_test[:m]}, "jpg")
            run(f"jpeg ({n} + {m} 32x32 JPEG files, CNN, 2 epochs)", FOLDER_CNN, FOLDER_CNN_RECIPE, folder)
        if "transfer" in args.rows:
            n, m = count(200), count(100)
            images = {"train": rgb(x_train[:n], 64, 2), "test": rgb(x_test[:m], 64, 3)}
            folder = image_folder(work / "transfer", images, {"train": y_train[:n], "test": y_test[:m]}, "jpg")
            run(f"transfer ({n} + {m} 64x64 JPEG files, MobileNetV2, 1+1 epochs)", TRANSFER, TRANSFER_RECIPE, folder)
        if "tabular" in args.rows:
            recipe = run("tabular (wine, 178 rows, MLP, 20 epochs)", TABULAR, TABULAR_RECIPE, None)
            row = rows[-1]
            fixed = Row._median(row.dlrun, "cpu") - Row._median(row.plain, "cpu")
            print(f"fixed cost of a tiny run: {fixed:+.2f} s CPU over the plain script (target <= 1 s)")
            fixed_cost(
                TABULAR,
                [str(work), str(work / "tabular-body.keras")],
                ["train", str(recipe), "--runs", str(work / "runs"), "--quiet"],
                max(args.rounds, 5),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
