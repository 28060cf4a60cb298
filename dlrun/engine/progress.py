"""The Keras callback behind the live display: feeds `display.EpochMeter` from `fit`'s own events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from dlrun.engine.display import EpochMeter

Logs = dict[str, Any] | None


class TrainProgress(keras.callbacks.Callback):
    """Epoch bar with exact step counts, speed and ETA on a terminal; one plain line per epoch otherwise."""

    def __init__(self, meter: EpochMeter, interrupted: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self.meter, self.interrupted = meter, interrupted

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        steps = (self.params or {}).get("steps")  # Keras' count (None for a stream of unknown length)
        self.meter.begin_epoch(epoch, int(steps) if steps else None)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        self.meter.batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        meter = self.meter
        # Cut short: by a signal, or by a callback stopping mid-epoch (NaN guard); EarlyStopping stops at its end.
        cut = self.interrupted() or (self.model.stop_training and bool(meter.steps) and meter.done < (meter.steps or 0))
        meter.end_epoch(logs, complete=not cut)
