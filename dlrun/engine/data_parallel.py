"""keras.distribution.DataParallel (JAX) over several devices or processes: equal steps, exact evaluation.

Under DataParallel every batch is one global array split over all devices; across processes each process
contributes its slice (`jax.make_array_from_process_local_data`), so every step is a collective that all
processes must join with slices of the same shape. Keras shards a tf.data pipeline per process by
splitting each global batch into `num_processes` equal slices (`rebatch(batch // num_processes)`, then
`shard`). A last partial batch breaks this: it splits into fewer slices than there are processes (one
process then runs a step the others never join: the hang), or into slices of different sizes (processes
disagree on the global shape, and the smaller slice's samples are silently over-weighted); in one process
a partial batch that the device count does not divide fails in JAX (IndivisibleError). Hence:

- training keeps only full global batches (`train_pipeline`): `n % batch_size` samples per epoch are left
  out, different ones each epoch when shuffling; `batch_size` must be a multiple of the device count;
- validation and test are not split at all: each process evaluates a local copy of the weights on the
  whole split, batch by batch exactly as single-device Keras does, so nothing is dropped or padded and
  every metric is the single-device metric (`LocalValidation`, `evaluate_local`). Process 0's validation
  numbers are then broadcast, so that callbacks (EarlyStopping, best checkpoints) decide the same on
  every process even if hosts round differently.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.data.prepare import SplitData
from dlrun.errors import RecipeError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from dlrun.data.prepare import Prepared
    from dlrun.recipe.schema import Recipe


def nested_arrays(value: Any) -> Any:
    """Arrays (or lists) nested in dicts/tuples -> the same structure of NumPy arrays, tuples for lists."""
    import numpy as np

    if isinstance(value, dict):
        return {k: nested_arrays(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return tuple(nested_arrays(v) for v in value)
    return np.asarray(value)


def global_devices() -> int:
    """Devices (across all processes) that the active distribution splits every batch over; 1 without one.
    Under ModelParallel, the size of the mesh's batch axis (the other axes split variables, not batches)."""
    import keras

    if keras.backend.backend() != "jax":
        return 1
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return int(mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)])


def splits_batches() -> bool:
    """Whether a keras.distribution splits batches over several devices (in one process or several)."""
    return global_devices() > 1


def predicts_alone(recipe: Recipe) -> bool:
    """Whether this process can run the model over a split by itself. Not when a keras.distribution splits
    batches (the model predicts across devices), nor under multi_worker (a predict of the mirrored model is a
    collective that waits for, or mismatches, the other workers)."""
    distribute = recipe.train.distribute
    return not splits_batches() and not (distribute is not None and distribute.strategy == "multi_worker")


def check_batch_size(batch_size: int, samples: int | None) -> None:
    """Refuse a global batch that cannot split evenly over all devices, or a split without one full batch."""
    devices = global_devices()
    if batch_size % devices:
        raise RecipeError(
            f"train.batch_size {batch_size} must be a multiple of the {devices} devices (across all processes) "
            f"that train.distribute splits every batch over (each device gets batch_size / {devices})",
            path=("train", "batch_size"),
        )
    if samples is not None and samples < batch_size:
        raise RecipeError(
            f"the training split has {samples} samples, fewer than one global batch ({batch_size}); "
            "split over several devices only full batches are trained on",
            path=("train", "batch_size"),
        )


def train_pipeline(data: SplitData, batch_size: int, *, shuffle: bool, seed: int) -> tf.data.Dataset:
    """The training split as full global batches only (arrays, or an already batched tf.data pipeline).

    Dropped: the last `n % batch_size` samples of every epoch's order (with `train.shuffle: true`, the
    default, a different few each epoch; with `shuffle: false` always the same tail of the split). The
    shuffle is seeded, so every process builds the same global order and Keras hands each its own slice.
    A pipeline's own shuffle is seeded too (Prepared.feed).
    """
    import tensorflow as tf

    if data.streamed:  # a file-backed pipeline (seeded shuffle, batched, last batch partial)
        return data.pipeline.rebatch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    dataset = tf.data.Dataset.from_tensor_slices((nested_arrays(data.x), nested_arrays(data.y)))
    if shuffle:
        dataset = dataset.shuffle(data.count(), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


@contextmanager
def unknown_length_expected() -> Iterator[None]:
    """Keras' per-process shard (`rebatch`, then `shard`) has no known length, so every epoch ends on an
    exhausted iterator and Keras warns "Your input ran out of data; interrupting training": expected here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


@contextmanager
def without_distribution() -> Iterator[None]:
    """Keras with no distribution for a while: variables and steps on this process's own device only."""
    import keras

    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def local_copy(model: keras.Model, custom_objects: dict[str, Any], path: Path | None = None) -> keras.Model:
    """`model` (compiled) as a model on this process alone, through its saved `.keras` file (`path`, or a
    temporary one): what is evaluated is what was saved, preprocessing layers and compile settings included."""
    import keras

    if path is None:
        with tempfile.TemporaryDirectory(prefix="dlrun-local-") as folder:
            model.save(str(Path(folder) / "model.keras"))
            return local_copy(model, custom_objects, Path(folder) / "model.keras")
    with without_distribution():
        # safe_mode off: this process has just written the file from the recipe it was allowed to train
        return keras.saving.load_model(str(path), custom_objects=custom_objects, safe_mode=False)


def copy_weights(source: keras.Model, target: keras.Model) -> bool:
    """Copy `source`'s weights into its local copy `target` when both list the same variables (in the saved
    order; a loaded nested model's paths lose their prefix, names and shapes do not); False otherwise."""
    pairs = list(zip(source.weights, target.weights, strict=False))
    if len(source.weights) != len(target.weights) or any(
        s.name != t.name or tuple(s.shape) != tuple(t.shape) for s, t in pairs
    ):
        return False
    import numpy as np

    with without_distribution():
        for s, t in pairs:
            t.assign(np.asarray(s))
    return True


def evaluate_local(
    model: keras.Model, prepared: Prepared, split: str, outputs: list[str], inputs: list[str], batch: int
) -> dict[str, float]:
    """`artifacts.evaluate_model` on a local model, with no distribution active."""
    from dlrun.engine.artifacts import evaluate_model

    with without_distribution():
        return evaluate_model(model, prepared, split, outputs, inputs, batch)


def broadcast_from_chief(values: dict[str, float]) -> dict[str, float]:
    """Process 0's values on every process (same keys everywhere: every process runs the same model)."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return values

    keys = sorted(values)
    array = np.asarray([values[k] for k in keys], dtype="float32")
    shared = np.asarray(multihost_utils.broadcast_one_to_all(array))
    return {k: float(v) for k, v in zip(keys, shared, strict=True)}


class LocalValidation:
    """The `val_*` logs under DataParallel, computed as single-device Keras would (see the module doc)."""

    @staticmethod
    def make(
        prepared: Prepared, outputs: list[str], inputs: list[str], batch: int, custom_objects: dict[str, Any]
    ) -> keras.callbacks.Callback:
        import keras

        class Validation(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.local: keras.Model | None = None

            def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
                self.local = None  # a stage may have recompiled (loss weights): copy the model afresh

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if logs is None:
                    return
                if self.local is None or not copy_weights(self.model, self.local):
                    self.local = local_copy(self.model, custom_objects)
                metrics = evaluate_local(self.local, prepared, "validation", outputs, inputs, batch)
                logs.update({f"val_{k}": v for k, v in broadcast_from_chief(metrics).items()})

        return Validation()
