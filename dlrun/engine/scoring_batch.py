"""How many predictions to score in one step when a model's compiled loss and metrics are applied to its
predictions on a split (engine.artifacts.metrics_on_predictions): the whole split at once where the numbers
cannot depend on how the split is cut into batches, else the evaluation batch, as `evaluate` cuts it.

Stepping a split batch by batch runs every loss and metric op once a batch: 16 batches of 128 cost
0.18-0.26 s CPU against 0.05 s for one step over the same 2,000 predictions (issue 21: png row, 2026-12-03).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCORING_BYTES = 64 * 2**20
"""At most this many bytes of predictions and targets are scored in one step (its temporaries are a few times
that): a segmentation model's predictions on a large split are scored in chunks."""

PER_SAMPLE_LOSSES = frozenset({
    "binary_crossentropy", "binary_focal_crossentropy", "categorical_crossentropy",
    "categorical_focal_crossentropy", "categorical_generalized_cross_entropy", "sparse_categorical_crossentropy",
    "categorical_hinge", "hinge", "squared_hinge", "cosine_similarity", "ctc", "huber", "log_cosh",
    "kl_divergence", "poisson", "mean_absolute_error", "mean_absolute_percentage_error", "mean_squared_error",
    "mean_squared_logarithmic_error",
})  # fmt: skip
"""Keras' loss functions that give one value per sample (a loss class is judged by the function it wraps):
averaged by `sum_over_batch_size` and weighed by batch size in `evaluate`, they give the split's mean however
it is batched. Not Dice, Tversky or Circle: with their default arguments they compute one value over a whole
batch. A loss not listed is scored batch by batch."""

MEAN_REDUCTIONS = frozenset({"sum_over_batch_size", "mean"})
"""Loss reductions that average per-sample values; `sum` grows with the batch."""


def scoring_batch_size(
    compile_config: dict[str, Any],
    custom_objects: dict[str, Any],
    predicted: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    batch_size: int,
) -> int:
    """The number of predictions to score per step: the whole split (up to SCORING_BYTES) where every loss and
    metric is batch-invariant (`batch_invariant`), else `batch_size`.

    With several outputs, `evaluate`'s traced loop averages each output's loss over batches without weighing a
    smaller last batch by its size, so there the split is scored in larger steps only when every batch of
    `batch_size` is whole."""
    samples = len(next(iter(predicted.values())))
    if samples == 0 or not batch_invariant(compile_config, custom_objects):
        return batch_size
    if len(predicted) > 1 and samples % batch_size:
        return batch_size
    row_bytes = sum(a[:1].nbytes for a in (*predicted.values(), *targets.values()))
    rows = max(batch_size, SCORING_BYTES // max(1, row_bytes) // batch_size * batch_size)
    if rows >= samples:
        return samples
    return rows if len(predicted) == 1 or samples % rows == 0 else batch_size


def batch_invariant(compile_config: dict[str, Any], custom_objects: dict[str, Any]) -> bool:
    """Whether the compiled loss and metrics give the same numbers on a split however it is cut into batches:
    Keras' own losses that average per-sample values (PER_SAMPLE_LOSSES) and Keras' own metrics (stateful:
    they accumulate over the samples they see). Anything custom, or any other loss, is not known to be."""
    losses = _leaves(compile_config.get("loss"))
    metrics = _leaves(compile_config.get("metrics")) + _leaves(compile_config.get("weighted_metrics"))
    return all(_per_sample_loss(c, custom_objects) for c in losses) and all(
        _keras_metric(c, custom_objects) for c in metrics
    )


def _leaves(config: Any) -> list[Any]:
    """The loss or metric entries of a compile config's `loss`/`metrics` (a list or dict per output, nested)."""
    if config is None:
        return []
    if isinstance(config, dict) and "class_name" not in config:  # per output
        return [leaf for value in config.values() for leaf in _leaves(value)]
    if isinstance(config, list | tuple):
        return [leaf for value in config for leaf in _leaves(value)]
    return [config]


def _from_keras(config: dict[str, Any]) -> bool:
    return str(config.get("module") or "").split(".")[0] == "keras"


def _per_sample_loss(config: Any, custom_objects: dict[str, Any]) -> bool:
    """Whether a compile config's loss entry (a name, or a serialized Keras loss) is one of PER_SAMPLE_LOSSES,
    from Keras itself, with a mean reduction."""
    if isinstance(config, str) and config in custom_objects:
        return False
    if not isinstance(config, str | dict) or (isinstance(config, dict) and not _from_keras(config)):
        return False
    import keras

    try:
        loss = keras.losses.get(config)
    except (ValueError, TypeError):  # a name Keras does not know, or a wrapped function of the recipe's own
        return False
    if getattr(loss, "reduction", "sum_over_batch_size") not in MEAN_REDUCTIONS:
        return False
    function = getattr(loss, "fn", loss)  # a loss class wraps its function
    module = getattr(function, "__module__", None) or ""
    return module.split(".")[0] == "keras" and getattr(function, "__name__", None) in PER_SAMPLE_LOSSES


def _keras_metric(config: Any, custom_objects: dict[str, Any]) -> bool:
    if isinstance(config, str):
        return config not in custom_objects
    if not isinstance(config, dict) or not _from_keras(config):
        return False
    function = (config.get("config") or {}).get("fn")
    if config.get("class_name") == "MeanMetricWrapper":
        return isinstance(function, str) and function not in custom_objects and _keras_metric_name(function)
    return True


def _keras_metric_name(name: str) -> bool:
    """Whether Keras resolves `name` as a metric of its own (all of which are per-sample)."""
    import keras

    try:
        keras.metrics.get(name)
    except ValueError:
        return False
    return True
