"""Splits by row index: slices (`train[:10%]`), seeded hold-outs, stratification, k folds.

Everything here works on row indices, so the same code splits in-memory arrays and streamed files.
All randomness comes from `numpy.random.default_rng(seed)`: the same seed gives the same rows.
"""

from __future__ import annotations

import re

import numpy as np

from dlrun.data.tables import Table
from dlrun.errors import RecipeError

KeyPath = tuple[str | int, ...]

_SLICE = re.compile(
    r"^\s*(?P<base>train|validation|test)\s*(?:\[\s*(?P<start>[^:\]]*)\s*:\s*(?P<stop>[^\]]*)\s*\])?\s*$"
)
_BOUND = re.compile(r"^\s*(?P<num>-?\d+(?:\.\d+)?)\s*(?P<pct>%?)\s*$")


def parse_slice(expr: str, where: KeyPath) -> tuple[str, str, str]:
    """`train[10%:25%]` -> ('train', '10%', '25%'); a bare split name takes all of it."""
    m = _SLICE.match(expr)
    if not m:
        raise RecipeError(
            f"cannot read split {expr!r}; write a split name with an optional slice: train, train[:80%], "
            "train[80%:], test[:1000]",
            path=where,
        )
    return m["base"], (m["start"] or "").strip(), (m["stop"] or "").strip()


def _bound(text: str, n: int, default: int, where: KeyPath, expr: str) -> int:
    if not text:
        return default
    m = _BOUND.match(text)
    if not m:
        raise RecipeError(f"slice bound {text!r} in {expr!r} must be a row number or a percentage", path=where)
    value = float(m["num"])
    if m["pct"]:
        if not -100 <= value <= 100:
            raise RecipeError(f"percentage {text!r} in {expr!r} is outside -100%..100%", path=where)
        value = value * n / 100
        index = round(value)
    else:
        if "." in m["num"]:
            raise RecipeError(f"row number {text!r} in {expr!r} must be a whole number", path=where)
        index = int(value)
    if index < 0:
        index += n
    return min(max(index, 0), n)


def slice_indices(expr: str, n: int, where: KeyPath) -> np.ndarray:
    """The row indices a slice expression selects from a split of `n` rows (in file order)."""
    _, start, stop = parse_slice(expr, where)
    a = _bound(start, n, 0, where, expr)
    b = _bound(stop, n, n, where, expr)
    if b <= a:
        raise RecipeError(f"split {expr!r} selects no rows of {n}", path=where)
    return np.arange(a, b)


def class_labels(values: np.ndarray, where: KeyPath) -> np.ndarray:
    """Labels to stratify by: integer or string labels, or the argmax of one-hot rows."""
    if values.ndim == 2 and values.shape[1] > 1:
        return values.argmax(axis=1)
    values = values.reshape(len(values), -1)[:, 0] if values.ndim > 1 else values
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise RecipeError("stratify needs class labels; this target is continuous", path=where)
    return values


def holdout(
    n: int, fraction: float, seed: int, labels: np.ndarray | None, where: KeyPath
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) sorted row indices: a seeded random `fraction`, per class when `labels` is given."""
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        n_held = round(n * fraction)
        held = order[:n_held]
    else:
        held_parts = []
        _, inverse = np.unique(labels, return_inverse=True)
        for c in range(inverse.max() + 1 if n else 0):
            members = np.flatnonzero(inverse == c)
            members = members[rng.permutation(len(members))]
            held_parts.append(members[: round(len(members) * fraction)])
        held = np.concatenate(held_parts) if held_parts else np.array([], dtype=int)
    if len(held) == 0 or len(held) == n:
        raise RecipeError(f"a split of {fraction} leaves an empty split of {n} samples", path=where)
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def kfold(n: int, k: int, seed: int, labels: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, held-out) index pairs; every row is held out exactly once. Stratified with `labels`."""
    if k < 2:
        raise RecipeError(f"--folds must be at least 2, not {k}")
    if k > n:
        raise RecipeError(f"--folds {k} is more than the {n} samples")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n, dtype=int)
    if labels is None:
        order = rng.permutation(n)
        for f, part in enumerate(np.array_split(order, k)):
            fold_of[part] = f
    else:
        _, inverse = np.unique(labels, return_inverse=True)
        offset = 0
        for c in range(inverse.max() + 1):
            members = np.flatnonzero(inverse == c)
            members = members[rng.permutation(len(members))]
            fold_of[members] = (np.arange(len(members)) + offset) % k
            offset += len(members)
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def apply_slices(tables: dict[str, Table], splits: dict[str, str]) -> dict[str, Table]:
    """New splits made of slices of the source's splits (`{train: 'train[:80%]', validation: ...}`)."""
    out: dict[str, Table] = {}
    for name, expr in splits.items():
        where: KeyPath = ("data", "splits", name)
        base, _, _ = parse_slice(expr, where)
        if base not in tables:
            raise RecipeError(
                f"split {expr!r} reads {base!r}, which the data does not have ({', '.join(tables)})", path=where
            )
        table = tables[base]
        out[name] = table.take(slice_indices(expr, table.count, where))
    return out


def subset_size(limit: int | float, n: int) -> int:
    """How many of `n` rows `limit` keeps: N rows (at most n), or a fraction of n (at least one)."""
    if isinstance(limit, float):
        return max(1, min(n, round(n * limit)))
    return min(limit, n)


def subset(n: int, size: int, seed: int, labels: np.ndarray | None, *, stratified: bool, where: KeyPath) -> np.ndarray:
    """Sorted indices of a seeded random `size` of `n` rows that keeps every class of `labels`.

    Stratified: each class gets its share (largest remainders), at least one row. Otherwise a plain random
    draw, in which a class that drew no row swaps one in for a row of the most drawn class.
    """
    rng = np.random.default_rng(seed)
    if size >= n:
        return np.arange(n)
    if labels is None:
        return np.sort(rng.permutation(n)[:size])
    values, inverse = np.unique(labels, return_inverse=True)
    if size < len(values):
        shown = ", ".join(map(str, values[:10].tolist())) + (", ..." if len(values) > 10 else "")
        raise RecipeError(
            f"a subset of {size} samples cannot keep the {len(values)} classes of the labels ({shown}); "
            "raise limit to at least the number of classes",
            path=where,
        )
    members = [np.flatnonzero(inverse == c) for c in range(len(values))]
    members = [m[rng.permutation(len(m))] for m in members]
    counts = np.array([len(m) for m in members])
    if stratified:
        share = counts * size / n
        quota = np.maximum(np.floor(share).astype(int), 1)
        while quota.sum() > size:  # the minimum of one per class overshot: take back from the largest
            quota[np.argmax(quota)] -= 1
        for c in np.argsort(-(share - np.floor(share)), kind="stable"):
            if quota.sum() >= size:
                break
            if quota[c] < counts[c]:
                quota[c] += 1
        while quota.sum() < size:  # classes smaller than their share: fill from the others
            quota[np.argmax(counts - quota)] += 1
        return np.sort(np.concatenate([m[:q] for m, q in zip(members, quota, strict=True)]))
    picked = rng.permutation(n)[:size]
    drawn = np.bincount(inverse[picked], minlength=len(values))
    for c in np.flatnonzero(drawn == 0):
        donor = int(np.argmax(drawn))
        drop = np.flatnonzero(inverse[picked] == donor)[-1]
        picked[drop] = members[c][0]
        drawn[donor] -= 1
        drawn[c] += 1
    return np.sort(picked)
