"""Feeding in-memory arrays to `model.fit` so that every epoch's order is a pure function of (seed, epoch).

Keras' own shuffling draws from a global random state, so a run resumed at epoch k would see other
batches than the uninterrupted run did. With `train.deterministic: true` (any backend) the training
stream is a `tf.data` pipeline whose epoch `e` visits the samples in `stateless_shuffle(range(n),
seed=(seed, e))` order: resuming at any epoch reproduces the same batches, and with op determinism the
same weights. Otherwise (the default) Keras gets the arrays and shuffles them
itself, exactly as a hand-written `model.fit` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlrun.data.prepare import Arrays, SplitData

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass
class Feed:
    """What to pass to `model.fit`: `x` (and `y`) plus `steps_per_epoch`, `shuffle` and `batch_size`."""

    x: Arrays | tf.data.Dataset | None
    y: Arrays | None
    steps_per_epoch: int | None
    shuffle: bool
    batch_size: int | None


def train_feed(
    data: SplitData,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool,
    start_epoch: int,
    end_epoch: int,
    deterministic: bool = False,
) -> Feed:
    """Arrays for Keras' own shuffling, or (deterministic) a per-epoch seeded stream; split over devices
    (keras.distribution), full global batches only: in deterministic mode the seeded stream of full batches,
    so that a run of several processes resumed at any epoch sees the batches it would have seen."""
    from dlrun.engine.data_parallel import splits_batches, train_pipeline

    if splits_batches() and (data.streamed or not deterministic):  # a seeded tf.data shuffle, reshuffled per epoch
        return Feed(train_pipeline(data, batch_size, shuffle=shuffle, seed=seed), None, None, False, None)
    if data.streamed:  # already a pipeline (file-backed data): it batches and shuffles itself
        return Feed(data.pipeline, None, None, False, None)
    epochs = (start_epoch, end_epoch)
    if splits_batches():  # (deterministic: one step per call, so steps never straddle two epochs; see compile)
        return epoch_stream(data.x, data.y, batch_size, seed=seed, shuffle=shuffle, epochs=epochs, full=True)
    if not deterministic:  # else a seeded tf.data stream, which Keras' jax and torch trainers read too
        return Feed(data.x, data.y, None, shuffle, batch_size)
    return epoch_stream(data.x, data.y, batch_size, seed=seed, shuffle=shuffle, epochs=epochs)


def epoch_stream(
    x: Arrays, y: Arrays, batch_size: int, *, seed: int, shuffle: bool, epochs: tuple[int, int], full: bool = False
) -> Feed:
    """Epochs `epochs[0]`..`epochs[1] - 1` of (x, y) as one stream of batches, epoch `e` in
    `stateless_shuffle(range(n), seed=(seed, e))` order; `full`: only whole batches, the last `n % batch_size`
    samples of each epoch's order left out (keras.distribution needs equal global batches)."""
    import tensorflow as tf

    from dlrun.engine.data_parallel import nested_arrays

    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    steps = n // batch_size if full else -(-n // batch_size)
    tensors = tf.nest.map_structure(tf.convert_to_tensor, nested_arrays((x, y)))

    def epoch_order(epoch: tf.Tensor) -> tf.data.Dataset:
        index = tf.range(n, dtype=tf.int64)
        if shuffle:
            index = tf.random.experimental.stateless_shuffle(index, seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        if full:  # batched below, outside flat_map, so that keras.distribution can read the batch size
            return tf.data.Dataset.from_tensor_slices(index[: steps * batch_size])
        return tf.data.Dataset.from_tensor_slices(index).batch(batch_size)

    def gather(index: tf.Tensor) -> object:
        return tf.nest.map_structure(lambda t: tf.gather(t, index), tensors)

    dataset = tf.data.Dataset.range(*epochs).flat_map(epoch_order)
    if full:
        dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return Feed(dataset.prefetch(tf.data.AUTOTUNE), None, steps, False, None)
