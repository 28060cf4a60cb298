"""Array steps (`data.inputs.X.steps`), each written once.

A step is written against `ArrayOps`, the few operations it needs, and runs on whole in-memory splits
(`NUMPY`) and on the batches of a tf.data stream (`TENSORFLOW`) alike: the same operations in the same order,
so a recipe's values do not depend on whether its data fits in memory (tests compare them bit for bit).
Checks that need the values themselves (a label outside `one_hot`'s range) run where the values are known.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from dlrun.errors import RecipeError
from dlrun.recipe.load import KeyPath
from dlrun.recipe.schema import Step

if TYPE_CHECKING:
    import tensorflow as tf

Fitted = dict[str, np.ndarray]  # what a statistics-bearing step fitted on the training split: {mean, std}
Array = TypeVar("Array")


class ArrayOps(Protocol[Array]):
    """The operations the steps use, on one kind of array whose first axis is the samples."""

    def reshape(self, x: Array, sample_shape: list[int]) -> Array:
        """Each sample to `sample_shape`, the number of samples kept."""

    def float32(self, x: Array) -> Array: ...

    def cast(self, x: Array, dtype: str) -> Array: ...

    def flat_int(self, x: Array) -> Array:
        """All values as one flat int64 vector."""

    def bounds(self, x: Array) -> tuple[int, int] | None:
        """The smallest and largest value, where they can be known when the step is applied."""

    def one_hot(self, labels: Array, depth: int) -> Array: ...


class NumpyOps:
    """Whole splits in memory."""

    def reshape(self, x: np.ndarray, sample_shape: list[int]) -> np.ndarray:
        return x.reshape((x.shape[0], *sample_shape))

    def float32(self, x: np.ndarray) -> np.ndarray:
        return x.astype("float32")

    def cast(self, x: np.ndarray, dtype: str) -> np.ndarray:
        return x.astype(dtype)

    def flat_int(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(-1).astype("int64")

    def bounds(self, x: np.ndarray) -> tuple[int, int] | None:
        return (int(x.min()), int(x.max())) if x.size else None

    def one_hot(self, labels: np.ndarray, depth: int) -> np.ndarray:
        return np.eye(depth, dtype="float32")[labels]


class TensorFlowOps:
    """Batches of a tf.data pipeline (symbolic: values are unknown when the step is applied)."""

    def reshape(self, x: tf.Tensor, sample_shape: list[int]) -> tf.Tensor:
        import tensorflow as tf

        return tf.reshape(x, [tf.shape(x)[0], *sample_shape])

    def float32(self, x: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        return tf.cast(x, tf.float32)

    def cast(self, x: tf.Tensor, dtype: str) -> tf.Tensor:
        import tensorflow as tf

        if x.dtype == tf.string and dtype != "string":
            return tf.strings.to_number(x, dtype)
        return tf.cast(x, dtype)

    def flat_int(self, x: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        return tf.cast(tf.reshape(x, [-1]), tf.int64)

    def bounds(self, x: tf.Tensor) -> tuple[int, int] | None:
        return None

    def one_hot(self, labels: tf.Tensor, depth: int) -> tf.Tensor:
        import tensorflow as tf

        return tf.one_hot(labels, depth, dtype=tf.float32)


NUMPY = NumpyOps()
TENSORFLOW = TensorFlowOps()

STREAMED_STANDARDIZE = (
    "standardize is not available for data streamed from disk; use `preprocess: [{type: Normalization}]` "
    "(adapted on the training split, and saved with the model)"
)


def fit_step(step: Step, train_x: np.ndarray) -> Fitted | None:
    """What `step` learns from the training split (before it is applied to any split), or None."""
    if not step.standardize:
        return None
    x = train_x.astype("float32")
    mean = np.nanmean(x, axis=0)  # missing values (a declared fill) are filled later, inside the model
    std = np.nanstd(x, axis=0)
    return {"mean": mean, "std": np.where(std == 0, 1.0, std).astype("float32")}


def apply_step(step: Step, x: Array, where: KeyPath, fitted: Fitted | None, ops: ArrayOps[Array]) -> Array:
    """One step on `x` (samples first) by `ops`; `fitted` is what `fit_step` learnt for it, if anything."""
    if step.reshape is not None:
        return _reshape(x, step.reshape, (*where, "reshape"), ops)
    if step.scale is not None:
        s = step.scale
        return ops.float32(x) * s.multiply / s.divide + s.offset
    if step.cast is not None:
        try:
            return ops.cast(x, step.cast)
        except (TypeError, ValueError):
            raise RecipeError(f"cannot cast to {step.cast!r}", path=(*where, "cast")) from None
    if step.one_hot is not None:
        labels = ops.flat_int(x)
        bounds = ops.bounds(labels)
        if bounds is not None and (bounds[0] < 0 or bounds[1] >= step.one_hot):
            raise RecipeError(
                f"labels range {bounds[0]}..{bounds[1]} does not fit one_hot: {step.one_hot}", path=(*where, "one_hot")
            )
        return ops.one_hot(labels, step.one_hot)
    if step.standardize:
        if fitted is None:
            raise RecipeError(STREAMED_STANDARDIZE, path=(*where, "standardize"))
        mean, std = (np.asarray(fitted[k], dtype="float32") for k in ("mean", "std"))
        return (ops.float32(x) - mean) / std
    return x


def _reshape(x: Any, sample_shape: list[int], where: KeyPath, ops: ArrayOps[Any]) -> Any:
    sample = tuple(x.shape[1:])
    known = all(d is not None for d in sample) and -1 not in sample_shape
    if known and math.prod(sample) != math.prod(sample_shape):
        raise RecipeError(f"cannot reshape samples of shape {sample} to {tuple(sample_shape)}", path=where)
    try:
        return ops.reshape(x, sample_shape)
    except ValueError:
        raise RecipeError(f"cannot reshape samples of shape {sample} to {tuple(sample_shape)}", path=where) from None
