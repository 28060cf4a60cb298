"""Arrays -> model-ready splits: per-feature steps, validation split, inputs/targets by name.

Statistics-bearing steps (`standardize`) are fitted on the training split only and then applied
unchanged to validation and test, so no information leaks from held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.sources import Splits, load_source
from dlrun.errors import RecipeError
from dlrun.recipe.schema import DataSpec, FeatureSpec, Step


@dataclass
class Prepared:
    """Model-ready arrays: `splits[split] = (inputs by name, targets by name)`, plus fitted statistics."""

    splits: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count(self, split: str) -> int:
        """Number of samples in `split`."""
        inputs = self.splits[split][0]
        return len(next(iter(inputs.values())))


def _apply(step: Step, x: np.ndarray, where: tuple[str | int, ...], fitted: dict[str, Any] | None) -> np.ndarray:
    if step.reshape is not None:
        try:
            return x.reshape((x.shape[0], *step.reshape))
        except ValueError:
            raise RecipeError(
                f"cannot reshape samples of shape {x.shape[1:]} to {tuple(step.reshape)}", path=(*where, "reshape")
            ) from None
    if step.scale is not None:
        s = step.scale
        return (x.astype("float32") * s.multiply / s.divide + s.offset).astype("float32")
    if step.cast is not None:
        try:
            return x.astype(step.cast)
        except TypeError:
            raise RecipeError(f"unknown dtype {step.cast!r}", path=(*where, "cast")) from None
    if step.one_hot is not None:
        labels = x.reshape(-1).astype("int64")
        if labels.size and (labels.min() < 0 or labels.max() >= step.one_hot):
            raise RecipeError(
                f"labels range {labels.min()}..{labels.max()} does not fit one_hot: {step.one_hot}",
                path=(*where, "one_hot"),
            )
        return np.eye(step.one_hot, dtype="float32")[labels]
    if step.standardize:
        assert fitted is not None
        return ((x.astype("float32") - fitted["mean"]) / fitted["std"]).astype("float32")
    return x


def _prepare_feature(
    name: str, spec: FeatureSpec, arrays: dict[str, dict[str, np.ndarray]], where: tuple[str | int, ...]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    out: dict[str, np.ndarray] = {}
    stats: dict[str, Any] = {}
    for data in arrays.values():
        if spec.from_ not in data:
            raise RecipeError(
                f"{name!r} reads {spec.from_!r}, which the data does not have (it has: {', '.join(sorted(data))})",
                path=(*where, "from"),
            )
    fitted: list[dict[str, Any] | None] = []
    train_x = arrays["train"][spec.from_]
    for i, step in enumerate(spec.steps):
        if step.standardize:
            x = train_x.astype("float32")
            mean = x.mean(axis=0)
            std = x.std(axis=0)
            std = np.where(std == 0, 1.0, std).astype("float32")
            fitted.append({"mean": mean, "std": std})
            stats[f"steps[{i}]"] = {"mean": mean, "std": std}
        else:
            fitted.append(None)
        train_x = _apply(step, train_x, (*where, "steps", i), fitted[-1])
    for split, data in arrays.items():
        x = data[spec.from_]
        for i, step in enumerate(spec.steps):
            x = _apply(step, x, (*where, "steps", i), fitted[i])
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise RecipeError(f"{name!r} has NaN or infinite values in the {split} split", path=where)
        out[split] = x
    return out, stats


def _split_validation(arrays: Splits, fraction: float, seed: int) -> Splits:
    train = arrays["train"]
    n = len(next(iter(train.values())))
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction)
    if n_val == 0 or n_val == n:
        raise RecipeError(
            f"validation_split {fraction} leaves an empty split of {n} samples", path=("data", "validation_split")
        )
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    out = dict(arrays)
    out["train"] = {k: v[train_idx] for k, v in train.items()}
    out["validation"] = {k: v[val_idx] for k, v in train.items()}
    return out


def prepare(spec: DataSpec, base_dir: Path, seed: int) -> Prepared:
    """Load the source and produce every split's inputs and targets by name."""
    arrays = load_source(spec, base_dir)
    if spec.limit is not None:
        arrays = {s: {k: v[: spec.limit] for k, v in d.items()} for s, d in arrays.items()}
    if spec.validation_split > 0:
        if "validation" in arrays:
            raise RecipeError(
                "the data already has a validation split; remove validation_split", path=("data", "validation_split")
            )
        arrays = _split_validation(arrays, spec.validation_split, seed)
    splits: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {s: ({}, {}) for s in arrays}
    stats: dict[str, dict[str, Any]] = {}
    for section, features, slot in (("inputs", spec.inputs, 0), ("targets", spec.targets, 1)):
        for name, feature in features.items():
            where = ("data", section, name)
            per_split, fitted = _prepare_feature(name, feature, arrays, where)
            if fitted:
                stats[f"{section}.{name}"] = fitted
            for split, x in per_split.items():
                splits[split][slot][name] = x
    return Prepared(splits=splits, stats=stats)
