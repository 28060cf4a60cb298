"""Keras layers dlrun adds to a model's preprocessing, registered for loading (safe mode included).

`FillMissing` replaces missing values (NaN in numbers, the empty string in text) by values fitted on the
training split, and can append one 0/1 indicator per feature. It is saved inside `model.keras` as
`dlrun>FillMissing`, so `dlrun predict` (and `keras.saving.load_model` after `import dlrun.data.layers`)
fills raw rows exactly as training did. Importing this module imports Keras.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

FILLS = ("mean", "median", "constant", "most_frequent")


@keras.saving.register_keras_serializable(package="dlrun")
class FillMissing(keras.layers.Layer):
    """`x` with each missing value replaced by its feature's fill value (`values[i]` for feature `i` of the
    last axis, or one value for a scalar input); with `indicator`, 0/1 flags of what was missing appended."""

    def __init__(self, values: list[Any], indicator: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.values = list(values)
        self.indicator = indicator
        self.text = bool(self.values) and isinstance(self.values[0], str)
        self.supports_masking = False
        if self.text and indicator:
            raise ValueError("a missing-value indicator is for numeric inputs")

    def call(self, x: Any) -> Any:
        if self.text:
            import tensorflow as tf  # text tensors are TensorFlow's

            fill = tf.constant(self.values if len(self.values) > 1 else self.values[0])
            return tf.where(tf.equal(x, ""), tf.broadcast_to(fill, tf.shape(x)), x)
        fill = keras.ops.convert_to_tensor(np.asarray(self.values, dtype="float32"), dtype=x.dtype)
        if len(self.values) == 1:
            fill = keras.ops.reshape(fill, ())
        missing = keras.ops.isnan(x)
        out = keras.ops.where(missing, fill, x)
        if self.indicator:
            flags = keras.ops.cast(missing, out.dtype)
            out = keras.ops.concatenate([out, flags], axis=-1)
        return out

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        if not self.indicator:
            return tuple(input_shape)
        last = input_shape[-1]
        return (*input_shape[:-1], None if last is None else 2 * last)

    def compute_output_spec(self, x: Any) -> Any:
        return keras.KerasTensor(self.compute_output_shape(tuple(x.shape)), dtype=x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "values": self.values, "indicator": self.indicator}


def is_missing(values: np.ndarray) -> np.ndarray:
    """Where `values` are missing: NaN in numbers, the empty string in text."""
    if values.dtype.kind in "OUS":
        return values.astype(str) == ""
    return np.isnan(values.astype("float64"))


def fit_fill(values: np.ndarray, how: str, constant: Any, where: tuple[str | int, ...]) -> list[Any]:
    """The fill value per feature (last axis) of training `values`: mean, median, most_frequent or constant."""
    from dlrun.errors import RecipeError

    text = values.dtype.kind in "OUS"
    flat = values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)
    if text and how in ("mean", "median"):
        raise RecipeError(f"fill: {how} needs numbers; this input is text: use most_frequent or constant", path=where)
    out: list[Any] = []
    for j in range(flat.shape[1]):
        column = flat[:, j]
        present = column[~is_missing(column)]
        if how == "constant":
            if constant is None:
                raise RecipeError("fill: constant needs `fill_value`", path=(*where[:-1], "fill_value"))
            if text != isinstance(constant, str):
                kind = "text" if text else "a number"
                raise RecipeError(f"fill_value must be {kind} for this input", path=(*where[:-1], "fill_value"))
            out.append(constant if text else float(constant))
            continue
        if len(present) == 0:
            raise RecipeError(f"fill: {how}: feature {j} has no value in the training split to fit on", path=where)
        if how == "mean":
            out.append(float(np.mean(present.astype("float64"))))
        elif how == "median":
            out.append(float(np.median(present.astype("float64"))))
        else:
            keys, counts = np.unique(present.astype(str) if text else present, return_counts=True)
            best = keys[int(np.argmax(counts))]  # ties: the smallest value, as np.unique sorts
            out.append(str(best) if text else float(best))
    return out
