"""Input pipeline: the same small model fed from a CSV file through tf.data versus from in-memory arrays.

One recipe, three data settings, each trained through `dlrun.api.train` in this process:
  memory    `stream: false`  the CSV is read into NumPy arrays; Keras' own array pipeline feeds the model
  files     `stream: true`   tf.data: CsvDataset -> vectorized mapping -> cache (it fits the budget) -> shuffle
  uncached  `stream: true, cache: false`  re-read and re-parsed from disk every epoch (data larger than memory)
Steps per second = steps per epoch / median epoch time without the first (compiling, caching) epoch; each
setting runs `--repeat` times alternately and keeps its best. Prints steps/s and the ratio files / memory
(target: at least 0.95); the uncached ratio is printed for information.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = """
name: bench_input
seed: 0
data:
  source: csv
  path: {data}
  stream: {stream}
  cache: {cache}
  inputs: {{x: {{from: [{columns}], preprocess: [{{type: Normalization}}]}}}}
  targets: {{y: {{from: y}}}}
model:
  inputs: {{x: {{shape: [{width}]}}}}
  layers:
    - {{type: Dense, units: 64, activation: relu}}
    - {{name: y, type: Dense, units: 1, activation: sigmoid}}
compile: {{optimizer: adam, loss: binary_crossentropy, metrics: [accuracy]}}
train: {{epochs: {epochs}, batch_size: {batch}}}
eval: {{split: train}}
"""


def write_csv(path: Path, rows: int, width: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, width))
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    with path.open("w") as fh:
        fh.write(",".join([*(f"f{i}" for i in range(width)), "y"]) + "\n")
        np.savetxt(fh, np.column_stack([x, y]), fmt=["%.5f"] * width + ["%d"], delimiter=",")


def steps_per_second(folder: Path, setting: str, args: argparse.Namespace) -> float:
    from dlrun import api

    stream, cache = {"memory": ("false", "auto"), "files": ("true", "auto"), "uncached": ("true", "false")}[setting]
    text = RECIPE.format(
        data=folder / "data.csv",
        stream=stream,
        cache=cache,
        columns=", ".join(f"f{i}" for i in range(args.width)),
        width=args.width,
        epochs=args.epochs,
        batch=args.batch,
    )
    recipe = folder / f"{setting}.yaml"
    recipe.write_text(text, encoding="utf-8")
    result = api.train(api.load_recipe(recipe), runs_root=folder / "runs", quiet=True)
    seconds = statistics.median(result.history["seconds"][1:])
    return -(-args.rows // args.batch) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlrun-bench-input-") as tmp:
        folder = Path(tmp)
        write_csv(folder / "data.csv", args.rows, args.width)
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            for setting in ("memory", "files", "uncached"):
                sps = steps_per_second(folder, setting, args)
                best[setting] = max(best.get(setting, 0.0), sps)
                print(f"  {setting:9s} {sps:8.1f} steps/s", flush=True)
    ratio = best["files"] / best["memory"]
    print(f"in-memory arrays : {best['memory']:8.1f} steps/s")
    print(f"CSV via tf.data  : {best['files']:8.1f} steps/s (cached after the first epoch)")
    print(f"CSV uncached     : {best['uncached']:8.1f} steps/s (parsed from disk every epoch)")
    print(
        f"ratio files / memory: {ratio:.3f} (target >= 0.95); uncached / memory: {best['uncached'] / best['memory']:.3f}"
    )
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
