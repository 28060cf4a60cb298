"""A Keras callback that records when each epoch begins, for benchmarks on both sides.

The time between two epoch starts is everything an epoch costs: its steps, validation and every other
callback's end-of-epoch work (dlrun's history files, resumable state, TensorBoard). The same class runs in
the hand-written script and, as a custom callback by file path, inside dlrun.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import keras


class EpochTimer(keras.callbacks.Callback):
    """Records wall and process CPU time at every epoch start and at the end of training, in a JSON file.

    CPU time (all threads of this process) is the steadier figure on a shared machine: other processes
    stretch the wall time of an epoch but not the work this one does."""

    def __init__(self, log: str) -> None:
        super().__init__()
        self.log = Path(log)
        self.stamps: list[tuple[float, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))
        self.log.write_text(json.dumps(self.stamps))


def epoch_seconds(log: Path, clock: int = 0) -> list[float]:
    """Per-epoch seconds from an EpochTimer log (start to start; the last epoch to the end of training);
    clock 0 is wall time, 1 the process's CPU time."""
    stamps = json.loads(log.read_text())
    return [b[clock] - a[clock] for a, b in itertools.pairwise(stamps)]
