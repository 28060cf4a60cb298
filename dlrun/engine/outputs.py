"""What each model output is — classifier (softmax, binary, multilabel) or regression, its class names, its
target scaling — decided once, at train time, and saved as the run's `outputs.json`. `eval`, `predict`,
`ensemble` and the reports read it (`read_outputs`); a run trained before the file existed gets the same
answer from the same function (`decide_outputs`), derived when it is read.

The rule: a softmax over several units is `softmax`; sigmoid units trained with a loss that is not a
regression loss are `binary` (one unit: its value is P(positive), the second class) or `multilabel`; a
crossentropy loss with `from_logits: true` counts as the activation it implies. Everything else is a
regression — a sigmoid unit trained with mse on 0/1 targets included: it predicts a number and is
reported as one, by eval and predict alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dlrun.data.prepare import Prepared, Vocabulary
from dlrun.recipe.compose import LoadedRecipe

if TYPE_CHECKING:
    import keras


OUTPUTS_FILE = "outputs.json"
REGRESSION_LOSSES = ("mse", "mae", "meansquared", "meanabsolute", "huber", "logcosh", "mape", "msle", "cosine")
Kind = Literal["softmax", "binary", "multilabel", "regression"]


@dataclass(frozen=True)
class OutputInfo:
    """One output: its kind, class names (binary: [negative, positive]; none for a regression), whether the
    model emits logits, and the target's declared scaling `scaled = original * multiply + add` (None: none)."""

    kind: Kind
    classes: list[str]
    logits: bool = False
    multiply: list[float] | float | None = None
    add: list[float] | float | None = None

    @property
    def classifier(self) -> bool:
        return self.kind != "regression"

    def probabilities(self, values: np.ndarray) -> np.ndarray:
        """The model's values as probabilities (softmax/sigmoid of logits when it emits logits)."""
        if not self.logits or not self.classifier:
            return values
        v = values.astype("float64")
        if self.kind == "softmax":
            e = np.exp(v - v.max(axis=-1, keepdims=True))
            return (e / e.sum(axis=-1, keepdims=True)).astype("float32")
        return (1.0 / (1.0 + np.exp(-v))).astype("float32")

    def original_units(self, values: np.ndarray) -> np.ndarray:
        """Regression values (predictions or scaled targets) back in the target's original units."""
        if self.multiply is None or self.add is None:
            return values
        return (np.asarray(values, dtype="float64") - np.asarray(self.add)) / np.asarray(self.multiply)


def _activation(tensor: keras.KerasTensor) -> str | None:
    layer = tensor._keras_history[0]
    while type(layer).__name__ == "Identity":  # graph.build renames an output (a block's, an alias) with one
        layer = layer.input._keras_history[0]
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None) or (fn if isinstance(fn, str) else None)
    if name is None and type(layer).__name__ == "Softmax":
        name = "softmax"
    return name


def _loss(loaded: LoadedRecipe, output: str) -> tuple[str, bool]:
    loss = loaded.recipe.compile.loss
    comp = loss.get(output) if isinstance(loss, dict) else loss
    if comp is None:
        return "", False
    return comp.type.lower().replace("_", ""), bool(comp.kwargs.get("from_logits", False))


def _kind(tensor: keras.KerasTensor, loaded: LoadedRecipe, output: str) -> tuple[Kind, bool]:
    shape = tuple(tensor.shape[1:])
    activation = _activation(tensor)
    loss, from_logits = _loss(loaded, output)
    if len(shape) != 1:
        return "regression", False
    logits = from_logits and "crossentropy" in loss and activation not in ("softmax", "sigmoid")
    if from_logits and "crossentropy" in loss:
        activation = "sigmoid" if "binary" in loss else "softmax"
    if activation == "softmax" and shape[0] and shape[0] > 1:
        return "softmax", logits
    if activation == "sigmoid" and not any(r in loss for r in REGRESSION_LOSSES):
        return ("binary" if shape[0] == 1 else "multilabel"), logits
    return "regression", False


def _target_scaling(
    loaded: LoadedRecipe, output: str, stats: dict[str, Any]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The target's steps as one affine map `original * multiply + add`; (None, None) when it has none or a
    step that is not affine (reshape, one_hot)."""
    spec = loaded.recipe.data
    feature = spec.targets.get(output) if spec is not None else None
    if feature is None or not any(s.scale or s.standardize for s in feature.steps):
        return None, None
    multiply: np.ndarray = np.float64(1.0)
    add: np.ndarray = np.float64(0.0)
    fitted = stats.get(f"targets.{output}", {})
    for i, step in enumerate(feature.steps):
        if step.scale is not None:
            factor = step.scale.multiply / step.scale.divide
            multiply, add = multiply * factor, add * factor + step.scale.offset
        elif step.standardize:
            mean, std = (np.asarray(fitted[f"steps[{i}]"][k], dtype="float64") for k in ("mean", "std"))
            multiply, add = multiply / std, (add - mean) / std
        elif step.cast is None:
            return None, None
    return np.asarray(multiply).tolist(), np.asarray(add).tolist()


def decide_outputs(
    loaded: LoadedRecipe, model: keras.Model, classes: dict[str, Vocabulary], stats: dict[str, Any] | None = None
) -> dict[str, OutputInfo]:
    """Every output's kind, class names and target scaling (the one place this is decided)."""
    outputs = list(loaded.graph.outputs)
    if len(outputs) != len(model.outputs):
        outputs = [t._keras_history[0].name for t in model.outputs]
    infos = {}
    for output, tensor in zip(outputs, model.outputs, strict=True):
        kind, logits = _kind(tensor, loaded, output)
        names = classes.get(output)
        count = 0 if kind == "regression" else 2 if kind == "binary" else int(tensor.shape[-1])
        labels = [str(names[i]) if names and i < len(names) else str(i) for i in range(count)]
        multiply, add = _target_scaling(loaded, output, stats or {}) if kind == "regression" else (None, None)
        infos[output] = OutputInfo(kind, labels, logits, multiply, add)
    return infos


def save_outputs(
    folder: Path, loaded: LoadedRecipe, model: keras.Model, prepared: Prepared, classes: dict[str, Vocabulary]
) -> None:
    """Decide every output and write `outputs.json` into the run folder."""
    from dlrun.engine.rundir import RunDir

    infos = decide_outputs(loaded, model, classes, prepared.stats)
    RunDir(folder).write_json(OUTPUTS_FILE, {name: asdict(info) for name, info in infos.items()})


def read_outputs(
    folder: Path,
    loaded: LoadedRecipe,
    model: keras.Model,
    classes: dict[str, Vocabulary],
    stats: dict[str, Any] | None = None,
) -> dict[str, OutputInfo]:
    """The run's `outputs.json`; for a run without one, the same decision derived now."""
    import json

    file = folder / OUTPUTS_FILE
    if file.is_file():
        return {k: OutputInfo(**v) for k, v in json.loads(file.read_text(encoding="utf-8")).items()}
    return decide_outputs(loaded, model, classes, stats)
