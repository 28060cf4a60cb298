"""The default TensorBoard log (`train.tensorboard: true`): each epoch's loss and metrics as scalars, in the
files and under the names Keras' TensorBoard callback uses (`<log_dir>/train` and `<log_dir>/validation`,
tags `epoch_<metric>`, `evaluation_<metric>_vs_iterations`), and at the end of the run the recipe's values as
one HParams session with the evaluation metrics, all written as TensorFlow's own event records.

Keras' callback writes each scalar with a `tf.summary` op run eagerly: ~10 ms CPU an epoch, 0.2-0.3 s of a
20-epoch tiny run (issue 21). Here an epoch is one serialized `Event` per folder, appended with TensorFlow's
record writer (~0.1 ms). The HParams session is the message `tensorboard.plugins.hparams.api.hparams_pb`
makes, built from the plugin's own protocol buffers: importing that API costs ~0.15 s CPU (TensorBoard's file
system stub imports boto3 and fsspec where they are installed). A recipe's own `TensorBoard` callback
(histograms, profiling, images) stays Keras'. Imported only when training with TensorFlow installed.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.util import event_pb2

_SCALARS = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
_HPARAMS_TAG = "_hparams_/session_start_info"  # tensorboard.plugins.hparams.metadata's names and version
_HPARAMS_PLUGIN, _HPARAMS_VERSION = "hparams", 0
_files = itertools.count()


class EventFile:
    """One TensorBoard event file, named as `tf.summary` names them, flushed after every event so a
    TensorBoard watching the run sees each epoch as it ends."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_files)}.v2"
        self.path = folder / name
        self._writer = tf.io.TFRecordWriter(str(self.path))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event holding `values` (tag -> number) at `step`, as `tf.summary.scalar` writes them."""
        summary = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag=tag, metadata=_SCALARS, tensor=_scalar(v)) for tag, v in values.items()
            ]
        )
        self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def hparams(self, values: dict[str, bool | int | float | str], trial_id: str, start_time: float) -> None:
        """One HParams session (`trial_id`) holding `values`, as `hparams_pb` describes it, at step 0."""
        from tensorboard.plugins.hparams import plugin_data_pb2

        session = plugin_data_pb2.SessionStartInfo(group_name=trial_id, start_time_secs=start_time)
        for name in sorted(values):
            value = values[name]
            if isinstance(value, bool):
                session.hparams[name].bool_value = value
            elif isinstance(value, int | float):
                session.hparams[name].number_value = value
            else:
                session.hparams[name].string_value = str(value)
        content = plugin_data_pb2.HParamsPluginData(version=_HPARAMS_VERSION, session_start_info=session)
        plugin = summary_pb2.SummaryMetadata.PluginData(
            plugin_name=_HPARAMS_PLUGIN, content=content.SerializeToString()
        )
        empty = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=0)]),
        )
        value = summary_pb2.Summary.Value(
            tag=_HPARAMS_TAG, metadata=summary_pb2.SummaryMetadata(plugin_data=plugin), tensor=empty
        )
        self._write(event_pb2.Event(wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value])))

    def _write(self, event: event_pb2.Event) -> None:
        self._writer.write(event.SerializeToString())
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _scalar(value: float) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(), float_val=[float(value)]
    )


class TensorBoardScalars(keras.callbacks.Callback):
    """Per-epoch scalars to `log_dir` as Keras' TensorBoard(write_graph=False) writes them by default: training
    values (and the learning rate) to `train/`, `val_` ones to `validation/`, at step = epoch index."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = Path(log_dir)
        self._files: dict[str, EventFile] = {}

    def _file(self, kind: str) -> EventFile:
        if kind not in self._files:  # created on first use, as Keras' writers are
            self._files[kind] = EventFile(self.log_dir / kind)
        return self._files[kind]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        train = {k: v for k, v in (logs or {}).items() if not k.startswith("val_")}
        validation = {k[4:]: v for k, v in (logs or {}).items() if k.startswith("val_")}
        learning_rate = getattr(self.model.optimizer, "learning_rate", None)
        if train and "learning_rate" not in train and learning_rate is not None:
            train["learning_rate"] = float(np.asarray(learning_rate))
        for kind, values in (("train", train), ("validation", validation)):
            if values:
                self._file(kind).scalars(epoch, {f"epoch_{k}": _number(v) for k, v in values.items()})

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        iterations = getattr(self.model.optimizer, "iterations", None)
        if logs and iterations is not None:
            step = int(np.asarray(iterations))
            self._file("validation").scalars(
                step, {f"evaluation_{k}_vs_iterations": _number(v) for k, v in logs.items()}
            )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for file in self._files.values():
            file.close()
        self._files = {}


def _number(value: Any) -> float:
    return float(np.asarray(value))


def write_run_summary(
    log_dir: Path,
    hyperparameters: dict[str, bool | int | float | str],
    trial_id: str,
    scalars: dict[str, float],
    step: int,
) -> None:
    """The end of a run in `log_dir` itself, beside train/ and validation/: its hyperparameters as one HParams
    session (`trial_id`: the run folder's name) and `scalars` (the evaluation metrics) at `step`."""
    file = EventFile(log_dir)
    try:
        file.hparams(hyperparameters, trial_id, time.time())
        file.scalars(step, scalars)
    finally:
        file.close()
