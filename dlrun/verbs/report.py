"""Reports on predictions: per-class precision/recall/F1 and confusion matrix for classifiers,
MAE/RMSE/R² for regression, and PNG plots (learning curves, confusion matrix) when matplotlib is present.
"""

from __future__ import annotations

from pathlib import Path
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


def save_plots(folder: Path, history: dict[str, list[float]] | None, reports: dict[str, dict[str, Any]]) -> list[Path]:
    """learning_curves.png and confusion_<output>.png; returns the files written ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []
    if history and history.get("epoch"):
        metrics = sorted({k.removeprefix("val_") for k in history if k not in ("epoch", "seconds", "learning_rate")})
        fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
        for ax, name in zip(axes[0], metrics, strict=True):
            for key, style in ((name, "-"), (f"val_{name}", "--")):
                if key in history:
                    ax.plot(history["epoch"][: len(history[key])], history[key], style, label=key)
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.legend()
        fig.tight_layout()
        written.append(_save(fig, folder / "learning_curves.png"))
        plt.close(fig)
    for output, rep in reports.items():
        if rep.get("kind") != "classification":
            continue
        matrix = np.asarray(rep["confusion_matrix"])
        size = max(3.0, 0.45 * len(matrix) + 1.5)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(matrix)), rep["labels"], rotation=90)
        ax.set_yticks(range(len(matrix)), rep["labels"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{output}: accuracy {rep['accuracy']:.3f}")
        if len(matrix) <= 20:
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > matrix.max() / 2 else "black")  # fmt: skip
        fig.tight_layout()
        written.append(_save(fig, folder / f"confusion_{output}.png"))
        plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    from dlrun.engine.rundir import atomic_target

    with atomic_target(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    return path
