"""Resuming a run of several processes (data_parallel under JAX, multi_worker under TensorFlow) from the
chief's state, on every process.

Only the chief keeps a run folder, possibly on a disk no other host sees. So with `--run-id` (or `--resume
auto`) the chief alone decides whether the run is new, continues from its saved state, or has finished,
and sends that decision and its state file (`resume/state.npz`, bytes) to every other process over the
distribution's own collectives: JAX's `broadcast_one_to_all`, or under TensorFlow an all-reduce (sum of
int32 words) in which only the chief's first replica contributes. The others write it into their scratch
folder and resume from it exactly as the chief does. Called after the processes have joined (inside the
strategy scope), with every process calling it at the same point.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dlrun.engine.resume import resumable, run_folder
from dlrun.engine.rundir import RunDir, atomic_write_bytes, atomic_write_text

NEW, RESUME, FINISHED = 0, 1, 2


def chief_decision(runs_root: Path, name: str, run_id: str | None) -> tuple[int, bytes]:
    """On the chief: (NEW | RESUME | FINISHED, the state file's bytes when resuming)."""
    if run_id is None:
        return NEW, b""
    run = RunDir(run_folder(runs_root, name, run_id))
    if run.model.is_file():
        return FINISHED, b""
    if resumable(run):
        return RESUME, (run.path / "resume" / "state.npz").read_bytes()
    return NEW, b""


def share_from_chief(status: int, payload: bytes, *, chief: bool) -> tuple[int, bytes]:
    """The chief's (status, payload) on every process; the others' arguments are ignored."""
    header = _broadcast(np.asarray([status, len(payload)] if chief else [0, 0], dtype=np.int32), chief=chief)
    status, size = int(header[0]), int(header[1])
    if not size:
        return status, b""
    words = -(-size // 4)
    data = np.zeros(words * 4, dtype=np.uint8)
    if chief:
        data[:size] = np.frombuffer(payload, dtype=np.uint8)
    shared = _broadcast(data.view(np.int32), chief=chief)
    return status, shared.astype(np.int32).view(np.uint8).tobytes()[:size]


def write_state(run: RunDir, payload: bytes) -> None:
    """The chief's state file as this process's own resumable state in `run` (a scratch folder)."""
    folder = run.path / "resume"
    atomic_write_bytes(folder / "state.npz", payload)
    with np.load(folder / "state.npz") as archive:
        meta = archive["meta"].tobytes().decode("utf-8") if "meta" in archive.files else '{"epoch": 0}'
    atomic_write_text(folder / "state.json", json.dumps(json.loads(meta)) + "\n")


def _broadcast(array: np.ndarray, *, chief: bool) -> np.ndarray:
    import keras

    if keras.backend.backend() == "jax":
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.broadcast_one_to_all(array, is_source=chief))
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    contributed: list[bool] = []

    def value(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        if chief and not contributed:  # one replica of the chief; every other replica adds zeros
            contributed.append(True)
            return tf.constant(array)
        return tf.zeros(array.shape, dtype=array.dtype)

    values = strategy.experimental_distribute_values_from_function(value)
    summed = strategy.run(lambda v: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, v),
                          args=(values,))  # fmt: skip
    return np.asarray(strategy.experimental_local_results(summed)[0])
