"""dlrun versus the same model written by hand in plain Keras with defaults: steady-state epoch time.

Both run in this one process on the same MNIST-shaped random data, alternating hand-written and dlrun
`--rounds` times so that drifts of a shared machine hit both sides alike. An epoch's time is from its
start to the next epoch's start (benchmarks/epoch_timer.py: steps plus every callback's end-of-epoch
work, dlrun's history files, resumable state and TensorBoard logs included); the figure is the median
over all rounds of the epochs after the first (compiling) one, in wall time and in the process's CPU time
(steadier on a shared machine). Prints one line per model with the ratios
dlrun / hand-written (target: at most 1.0 on CPU) and each round's own ratio, to show the noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.epoch_timer import epoch_seconds

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
train:
  epochs: {epochs}
  batch_size: 128
  callbacks: [{{type: "benchmarks.epoch_timer:EpochTimer", log: {log}}}]
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
train:
  epochs: {epochs}
  batch_size: 128
  callbacks: [{{type: "benchmarks.epoch_timer:EpochTimer", log: {log}}}]
eval: {{split: train}}
"""


def hand_model(kind: str) -> Any:
    """The model a user would write by hand: the seeds' MLP or the fashion CNN (Sequential)."""
    import keras

    L = keras.layers
    if kind == "mlp":
        return keras.Sequential(
            [keras.Input((784,)), L.Dense(512, activation="relu"), L.Dense(10, activation="softmax")]
        )
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(64, 7, activation="relu", padding="same"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu", padding="same"), L.Conv2D(128, 3, activation="relu", padding="same"),
        L.MaxPooling2D(2), L.Conv2D(256, 3, activation="relu", padding="same"),
        L.Conv2D(256, 3, activation="relu", padding="same"), L.MaxPooling2D(2), L.Flatten(),
        L.Dense(128, activation="relu"), L.Dropout(0.5), L.Dense(64, activation="relu"), L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ])  # fmt: skip


def hand_written(kind: str, x: np.ndarray, y: np.ndarray, epochs: int, log: Path) -> None:
    """The plain-Keras script a user would write (defaults everywhere), timed into `log`."""
    import keras

    from benchmarks.epoch_timer import EpochTimer

    keras.utils.set_random_seed(0)
    model = hand_model(kind)
    shape = (-1, 784) if kind == "mlp" else (-1, 28, 28, 1)
    inputs = x.reshape(shape).astype("float32") / 255
    optimizer = "rmsprop" if kind == "mlp" else "nadam"
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    labels = keras.utils.to_categorical(y, 10)
    model.fit(inputs, labels, epochs=epochs, batch_size=128, verbose=0, callbacks=[EpochTimer(str(log))])


def with_dlrun(kind: str, data: Path, epochs: int, runs: Path, log: Path) -> None:
    """The same model from a recipe through dlrun.train (its defaults), timed into `log`."""
    from dlrun import api
    from tests.conftest import write_recipe

    text = (MLP if kind == "mlp" else CNN).format(data=data, epochs=epochs, log=log)
    recipe = write_recipe(runs, text, f"{kind}.yaml")
    api.train(api.load_recipe(recipe), runs_root=runs, quiet=True, trust=True)  # trust: the timer callback


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=60000, help="MLP samples per epoch")
    parser.add_argument("--cnn-samples", type=int, default=1024, help="CNN samples per epoch (CPU is slow)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="hand-written/dlrun pairs per model")
    parser.add_argument("--only", choices=["mlp", "cnn"], help="one model only")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, n in (("mlp", args.samples), ("cnn", args.cnn_samples)):
            if args.only and kind != args.only:
                continue
            x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            y = rng.integers(0, 10, size=n).astype(np.uint8)
            data = folder / f"{kind}.npz"
            np.savez(data, x_train=x, y_train=y)
            wall: dict[str, list[float]] = {"hand": [], "dlrun": []}
            cpu: dict[str, list[float]] = {"hand": [], "dlrun": []}
            rounds = []
            for r in range(args.rounds):
                logs = {"hand": folder / f"hand-{kind}-{r}.json", "dlrun": folder / f"dlrun-{kind}-{r}.json"}
                hand_written(kind, x, y, args.epochs, logs["hand"])
                with_dlrun(kind, data, args.epochs, folder, logs["dlrun"])
                for side, log in logs.items():
                    wall[side] += epoch_seconds(log)[1:]  # after the first (compiling) epoch
                    cpu[side] += epoch_seconds(log, clock=1)[1:]
                latest = {side: statistics.median(v[-(args.epochs - 1) :]) for side, v in wall.items()}
                rounds.append(f"{latest['dlrun'] / latest['hand']:.2f}")
            w = {side: statistics.median(v) for side, v in wall.items()}
            c = {side: statistics.median(v) for side, v in cpu.items()}
            print(f"{kind}: {n} samples/epoch, batch 128, {len(wall['hand'])} epochs a side | wall: hand-written "
                  f"Keras {w['hand']:.3f} s/epoch, dlrun {w['dlrun']:.3f}, ratio {w['dlrun'] / w['hand']:.2f} "
                  f"(rounds {', '.join(rounds)}) | CPU: hand {c['hand']:.3f} s/epoch, dlrun {c['dlrun']:.3f}, "
                  f"ratio {c['dlrun'] / c['hand']:.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
