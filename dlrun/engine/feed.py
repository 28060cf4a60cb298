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
from typing import Any

from dlrun.data.prepare import SplitData


@dataclass
class Feed:
    """What to pass to `model.fit`: `x` (and `y`) plus `steps_per_epoch`, `shuffle` and `batch_size`."""

    x: Any
    y: Any
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
    """Arrays for Keras' own shuffling, or (deterministic) a per-epoch seeded stream."""
    from dlrun.engine.data_parallel import nested_arrays, splits_batches, train_pipeline

    if splits_batches():  # keras.distribution over several devices: full global batches only
        return Feed(train_pipeline(data, batch_size, shuffle=shuffle, seed=seed), None, None, False, None)
    if data.streamed:  # already a pipeline (file-backed data): it batches and shuffles itself
        return Feed(data.pipeline, None, None, False, None)
    n = data.count()
    steps = -(-n // batch_size)
    if not deterministic:  # else a seeded tf.data stream, which Keras' jax and torch trainers read too
        return Feed(data.x, data.y, None, shuffle, batch_size)
    import tensorflow as tf

    tensors = tf.nest.map_structure(tf.convert_to_tensor, nested_arrays((data.x, data.y)))

    def epoch_batches(epoch: Any) -> Any:
        index = tf.range(n, dtype=tf.int64)
        if shuffle:
            index = tf.random.experimental.stateless_shuffle(index, seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(index).batch(batch_size)

    def gather(index: Any) -> Any:
        return tf.nest.map_structure(lambda t: tf.gather(t, index), tensors)

    dataset = (
        tf.data.Dataset.range(start_epoch, end_epoch)
        .flat_map(epoch_batches)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return Feed(dataset, None, steps, False, None)
