"""dlrun versus the same model written by hand in plain Keras with defaults: steady-state epoch time.

Both run in this one process, alternating, on the same MNIST-shaped random data; the figure is the
median epoch time after the first (compilation) epoch. Prints one line per model and the ratio
dlrun / hand-written (target: at most 1.0 on CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

MLP = """
name: bench_mlp
seed: 0
data:
  source: npz
  path: {data}
  inputs: {{image: {{from: x, steps: [{{reshape: [784]}}, {{scale: {{divide: 255}}}}]}}}}
  targets: {{digit: {{from: y, steps: [{{one_hot: 10}}]}}}}
model:
  inputs: {{image: {{shape: [784]}}}}
  layers:
    - {{type: Dense, units: 512, activation: relu}}
    - {{name: digit, type: Dense, units: 10, activation: softmax}}
compile: {{optimizer: rmsprop, loss: categorical_crossentropy, metrics: [accuracy]}}
train: {{epochs: {epochs}, batch_size: 128}}
eval: {{split: train}}
"""

CNN = """
name: bench_cnn
seed: 0
data:
  source: npz
  path: {data}
  inputs: {{image: {{from: x, steps: [{{reshape: [28, 28, 1]}}, {{scale: {{divide: 255}}}}]}}}}
  targets: {{label: {{from: y, steps: [{{one_hot: 10}}]}}}}
model:
  inputs: {{image: {{shape: [28, 28, 1]}}}}
  layers:
    - {{type: Conv2D, filters: 64, kernel_size: 7, activation: relu, padding: same}}
    - {{type: MaxPooling2D, pool_size: 2}}
    - {{type: Conv2D, filters: 128, kernel_size: 3, activation: relu, padding: same}}
    - {{type: Conv2D, filters: 128, kernel_size: 3, activation: relu, padding: same}}
    - {{type: MaxPooling2D, pool_size: 2}}
    - {{type: Conv2D, filters: 256, kernel_size: 3, activation: relu, padding: same}}
    - {{type: Conv2D, filters: 256, kernel_size: 3, activation: relu, padding: same}}
    - {{type: MaxPooling2D, pool_size: 2}}
    - {{type: Flatten}}
    - {{type: Dense, units: 128, activation: relu}}
    - {{type: Dropout, rate: 0.5}}
    - {{type: Dense, units: 64, activation: relu}}
    - {{type: Dropout, rate: 0.5}}
    - {{name: label, type: Dense, units: 10, activation: softmax}}
compile: {{optimizer: nadam, loss: categorical_crossentropy, metrics: [accuracy]}}
train: {{epochs: {epochs}, batch_size: 128}}
eval: {{split: train}}
"""


def hand_written(kind: str, x: np.ndarray, y: np.ndarray, epochs: int) -> list[float]:
    """The plain-Keras script a user would write (defaults everywhere); per-epoch seconds."""
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    if kind == "mlp":
        inputs = x.reshape(-1, 784).astype("float32") / 255
        model = keras.Sequential(
            [keras.Input((784,)), L.Dense(512, activation="relu"), L.Dense(10, activation="softmax")]
        )
        optimizer = "rmsprop"
    else:
        inputs = x.reshape(-1, 28, 28, 1).astype("float32") / 255
        model = keras.Sequential([
            keras.Input((28, 28, 1)), L.Conv2D(64, 7, activation="relu", padding="same"), L.MaxPooling2D(2),
            L.Conv2D(128, 3, activation="relu", padding="same"), L.Conv2D(128, 3, activation="relu", padding="same"),
            L.MaxPooling2D(2), L.Conv2D(256, 3, activation="relu", padding="same"),
            L.Conv2D(256, 3, activation="relu", padding="same"), L.MaxPooling2D(2), L.Flatten(),
            L.Dense(128, activation="relu"), L.Dropout(0.5), L.Dense(64, activation="relu"), L.Dropout(0.5),
            L.Dense(10, activation="softmax"),
        ])  # fmt: skip
        optimizer = "nadam"
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(inputs, keras.utils.to_categorical(y, 10), epochs=epochs, batch_size=128, verbose=0, callbacks=[Timer()])
    return times


def with_dlrun(kind: str, data: Path, epochs: int, runs: Path) -> list[float]:
    """The same model from a recipe through dlrun.train; per-epoch seconds from its history."""
    from dlrun import api
    from tests.conftest import write_recipe

    text = (MLP if kind == "mlp" else CNN).format(data=data, epochs=epochs)
    recipe = write_recipe(runs, text, f"{kind}.yaml")
    result = api.train(api.load_recipe(recipe), runs_root=runs, quiet=True)
    return result.history["seconds"]


def steady(times: list[float]) -> float:
    """Median epoch time without the first (compiling) epoch."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=60000, help="MLP samples per epoch")
    parser.add_argument("--cnn-samples", type=int, default=1024, help="CNN samples per epoch (CPU is slow)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, n in (("mlp", args.samples), ("cnn", args.cnn_samples)):
            x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            y = rng.integers(0, 10, size=n).astype(np.uint8)
            data = folder / f"{kind}.npz"
            np.savez(data, x_train=x, y_train=y)
            hand = steady(hand_written(kind, x, y, args.epochs))
            ours = steady(with_dlrun(kind, data, args.epochs, folder))
            print(f"{kind}: {n} samples/epoch, batch 128 | hand-written Keras {hand:.3f} s/epoch | "
                  f"dlrun {ours:.3f} s/epoch | ratio dlrun/hand {ours / hand:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
