"""Wall time of `dlrun validate` (target < 0.5 s) and `dlrun summary` (target < TensorFlow import + 1.5 s),
and peak memory of a training run versus the plain Keras script (target <= 1.1x)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.twins import compile_dlrun  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def wall(cmd: list[str], repeat: int = 5) -> float:
    """Median wall time of a command over `repeat` runs (after one warm-up)."""
    subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, check=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory of a child process (ru_maxrss of a fresh waiter process)."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], cwd=ROOT, env=ENV, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1024


# The same job as the dlrun run below: train, evaluate on the training data, save the model.
PLAIN = """
import sys, numpy as np, keras
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(20000, 28, 28), dtype=np.uint8).reshape(-1, 784).astype("float32") / 255
y = keras.utils.to_categorical(rng.integers(0, 10, size=20000), 10)
m = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                      keras.layers.Dense(10, activation="softmax")])
m.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
m.fit(x, y, epochs=2, batch_size=128, verbose=0)
m.evaluate(x, y, batch_size=128, verbose=0)
m.save(sys.argv[1])
"""


def main() -> int:
    compile_dlrun()
    dlrun = [sys.executable, "-m", "dlrun"]
    recipe = str(ROOT / "recipes" / "mnist.yaml")
    validate = wall([*dlrun, "validate", recipe])
    tf_import = wall([sys.executable, "-c", "import tensorflow"], repeat=3)
    summary = wall([*dlrun, "summary", recipe], repeat=3)
    print(f"dlrun validate: {validate:.3f} s (target < 0.5 s)")
    print(f"dlrun summary: {summary:.3f} s; TensorFlow import {tf_import:.3f} s; "
          f"summary - import = {summary - tf_import:.3f} s (target < 1.5 s)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        import numpy as np

        rng = np.random.default_rng(0)
        data = Path(tmp) / "mnist.npz"
        np.savez(data, x_train=rng.integers(0, 256, size=(20000, 28, 28), dtype=np.uint8),
                 y_train=rng.integers(0, 10, size=20000).astype(np.uint8))  # fmt: skip
        plain = peak_rss_mb([sys.executable, "-c", PLAIN, str(Path(tmp) / "plain.keras")])
        ours = peak_rss_mb([*dlrun, "train", recipe, "--runs", str(Path(tmp) / "runs"), "--quiet",
                            "--set", "data.source=npz", "--set", f"data.path={data}", "--set", "train.epochs=2",
                            "--set", "eval.split=train"])  # fmt: skip
    print(
        f"peak memory: plain Keras {plain:.0f} MB | dlrun train {ours:.0f} MB | ratio {ours / plain:.2f} (target <= 1.1)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
