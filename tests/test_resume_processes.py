"""Resume across processes: a two-process run (JAX data_parallel, TensorFlow multi_worker) SIGKILLed, then
both processes started again with the same `--run-id`, continues from the chief's state on every process and
ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, SHARED_DATA, write_recipe

pytest.importorskip("sklearn")

RECIPE = """
name: digits_resume
seed: 5
data:
  source: sklearn
  name: digits
  test_split: 0.2
  validation_split: 0.1
  stratify: true
  inputs: {x: {from: x, steps: [{scale: {divide: 16}}]}}
  targets: {y: {from: y, steps: [{one_hot: 10}]}}
model:
  inputs: {x: {shape: [64]}}
  layers:
    - {type: Dense, units: 32, activation: relu}
    - {name: y, type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.005}
  loss: categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 4, batch_size: 32, deterministic: true, tensorboard: false, distribute: {strategy: STRATEGY}}
"""

TIMEOUT = 300


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _environments(strategy: str) -> list[dict[str, str]]:
    base = {**os.environ, "DLRUN_DATA_DIR": str(SHARED_DATA), "NO_COLOR": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    base.pop("XLA_FLAGS", None)
    if strategy == "data_parallel":
        (port,) = _free_ports(1)
        return [
            {**base, "KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
             "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(rank)}
            for rank in (0, 1)
        ]  # fmt: skip
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    return [
        {**base, "KERAS_BACKEND": "tensorflow",
         "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}})}
        for rank in (0, 1)
    ]  # fmt: skip


def _start(recipe: Path, runs: Path, run_id: str, strategy: str) -> list[subprocess.Popen]:
    command = [sys.executable, "-m", "dlrun", "train", str(recipe), "--runs", str(runs), "--run-id", run_id, "--json"]
    return [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for env in _environments(strategy)
    ]


def _kill(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _finish(procs: list[subprocess.Popen]) -> list[dict]:
    deadline = time.monotonic() + TIMEOUT
    try:
        outputs = [proc.communicate(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    except subprocess.TimeoutExpired:
        _kill(procs)
        pytest.fail(f"two-process training still running after {TIMEOUT}s")
    for rank, (proc, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"process {rank} exited {proc.returncode}: {err[-3000:]}"
    return [json.loads(out) for out, _ in outputs]


def _weights(run: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(str(run / "model.keras")).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["data_parallel", "multi_worker"])
def test_two_processes_killed_and_restarted_end_with_the_uninterrupted_weights(tmp_path, strategy):
    if strategy == "data_parallel":
        pytest.importorskip("jax")
    recipe = write_recipe(tmp_path, RECIPE.replace("STRATEGY", strategy))
    runs = tmp_path / "runs"
    straight, _ = _finish(_start(recipe, runs, "straight", strategy))

    procs = _start(recipe, runs, "job", strategy)
    state = runs / "digits_resume" / "job" / "resume" / "state.json"
    deadline = time.monotonic() + TIMEOUT
    while not (state.is_file() and json.loads(state.read_text())["epoch"] >= 2):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            _kill(procs)
            pytest.fail("the run ended (or stalled) before it could be killed")
        time.sleep(0.02)
    os.killpg(procs[1].pid, signal.SIGKILL)  # the worker dies; the chief is stopped too (restart both)
    time.sleep(0.5)
    _kill(procs)
    run = runs / "digits_resume" / "job"
    assert not (run / "model.keras").exists()
    saved = json.loads(state.read_text())["epoch"]
    assert 2 <= saved < 4

    chief, worker = _finish(_start(recipe, runs, "job", strategy))
    assert chief["run"] == str(run.resolve()) and worker["run"] is None
    for a, b in zip(_weights(Path(straight["run"])), _weights(run), strict=True):
        np.testing.assert_array_equal(a, b)
    assert chief["metrics"] == straight["metrics"]
    assert worker["metrics"] == pytest.approx(chief["metrics"], abs=1e-6)  # it resumed the same weights
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3, 4]

    if strategy == "data_parallel":  # (once: each two-process start costs about 20 s of CPU)
        again = _finish(_start(recipe, runs, "job", strategy))  # finished: both exit 0, nothing retrained
        assert again[0] == chief  # (the worker, on this same disk, reports the chief's folder too)
