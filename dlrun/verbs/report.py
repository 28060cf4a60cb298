"""Reports on predictions: per-class precision/recall/F1 and confusion matrix for classifiers,
MAE/RMSE/R² for regression (their pictures are drawn by `dlrun.verbs.plot`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _labels(y: np.ndarray) -> np.ndarray:
    """Class indices from one-hot/probabilities (last axis > 1), sigmoid scores or integer labels."""
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return y.argmax(axis=-1).reshape(-1)
    flat = y.reshape(-1)
    if np.issubdtype(flat.dtype, np.floating) and not np.all(np.equal(np.mod(flat, 1), 0)):
        return (flat > 0.5).astype("int64")
    return flat.astype("int64")


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str] | None = None
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support by class name, macro averages over the classes present
    in `y_true` (the absent ones are listed), and the confusion matrix."""
    truth, guess = _labels(y_true), _labels(y_pred)
    k = int(max(truth.max(initial=0), guess.max(initial=0)) + 1)
    if y_pred.ndim >= 2 and y_pred.shape[-1] > 1:
        k = max(k, y_pred.shape[-1])
    k = max(k, len(class_names or []))
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, guess), 1)
    names = [*(class_names or []), *[str(i) for i in range(len(class_names or []), k)]]
    per_class = {}
    for i, name in enumerate(names):
        tp = matrix[i, i]
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(actual),
        }
    present = [c for c in per_class.values() if c["support"]]
    macro = {m: float(np.mean([c[m] for c in present])) if present else 0.0 for m in ("precision", "recall", "f1")}
    return {
        "kind": "classification",
        "accuracy": float(np.trace(matrix) / matrix.sum()) if matrix.sum() else 0.0,
        "classes": per_class,
        "macro": macro,
        "absent": [name for name, c in per_class.items() if not c["support"]],  # left out of the macro averages
        "confusion_matrix": matrix.tolist(),
        "labels": names,
    }


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE and R² (over all target dimensions)."""
    t = np.asarray(y_true, dtype="float64").reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype="float64").reshape(len(y_pred), -1)
    err = p - t
    total = ((t - t.mean(axis=0)) ** 2).sum()
    return {
        "kind": "regression",
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1 - (err**2).sum() / total) if total else 0.0,
    }


def metrics_by_output(metrics: dict[str, float], outputs: list[str]) -> list[tuple[str, str, float]]:
    """Keras' metric names split into (output, metric, value): `y1_accuracy` -> ('y1', 'accuracy');
    a total (`loss` of a multi-output model) belongs to 'all'."""
    rows = []
    for key, value in metrics.items():
        output = next((o for o in outputs if key.startswith(f"{o}_")), None) if len(outputs) > 1 else outputs[0]
        metric = key[len(output) + 1 :] if output and len(outputs) > 1 else key
        rows.append((output or "all", metric, value))
    return rows
