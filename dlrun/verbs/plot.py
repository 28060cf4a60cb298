"""Pictures of runs, drawn once here for every verb: learning curves (one run's, or several runs overlaid:
`dlrun plot RUN...`) and confusion matrices. `dlrun train` and `dlrun eval` write them into the run folder
(`save_plots`); `dlrun plot` writes PNG or SVG where asked.

matplotlib is the `plots` extra: without it the run folder gets no pictures and `dlrun plot` says how to
install it. Nothing here imports TensorFlow: `dlrun plot` reads the runs' history.json only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.errors import RecipeError

if TYPE_CHECKING:
    from types import ModuleType

    from matplotlib.figure import Figure

History = dict[str, list[float]]
NOT_CURVES = ("epoch", "seconds", "learning_rate")
FORMATS = (".png", ".svg")
INSTALL = "pip install 'dlrun[plots]' (matplotlib)"
PNG_COMPRESSION = 3
"""zlib level of the PNG pictures. PIL's default (6) spends ~3x the CPU for files ~20 % smaller: a 10-class
confusion matrix 39 vs 11 ms, 31 vs 39 KB; learning curves 26 vs 10 ms (issue 21: a small run's fixed cost)."""


def _pyplot() -> ModuleType | None:
    """matplotlib's pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    plt.rcParams["svg.fonttype"] = "none"  # SVG text stays text (searchable, selectable), not glyph outlines
    return plt


def curve_names(histories: list[History], metric: str | None = None) -> list[str]:
    """The metrics to draw, one panel each (`val_x` shares x's panel): all the histories hold, or `metric`."""
    names = sorted({k.removeprefix("val_") for h in histories for k in h if k not in NOT_CURVES})
    if metric is None:
        return names
    wanted = metric.removeprefix("val_")
    if wanted not in names:
        raise RecipeError(f"--metric {metric!r}: the runs' histories have {', '.join(names) or 'no metrics'}")
    return [wanted]


def draw_curves(histories: dict[str, History], file: Path, metric: str | None = None) -> Path:
    """Learning curves: a panel per metric, training solid and validation dashed, one colour per run (labelled
    when there are several). PNG or SVG by `file`'s suffix, written atomically."""
    plt = _pyplot()
    if plt is None:
        raise RecipeError(f"drawing plots needs matplotlib: {INSTALL}")
    names = curve_names(list(histories.values()), metric)
    if not names:
        raise RecipeError("the runs' histories hold no metrics to draw (no epoch finished)")
    from matplotlib.ticker import MaxNLocator

    several = len(histories) > 1
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2 + 0.4 * several), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes[0], names, strict=True):
        for i, (label, history) in enumerate(histories.items()):
            colour = colours[i % len(colours)]
            for key, style in ((name, "-"), (f"val_{name}", "--")):
                if key in history:
                    epochs = history.get("epoch") or list(range(1, len(history[key]) + 1))
                    shown = f"{label} {key}" if several else key
                    ax.plot(epochs[: len(history[key])], history[key], style, color=colour, label=shown,
                            gid=f"curve-{i + 1}-{key}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small" if several else "medium")
    # Fixed margins in inches (room for tick labels of 6-7 characters, the title, the x label) instead of
    # tight_layout, which draws every text once more to measure it: ~0.15 s of a tiny run's fixed cost (issue 21).
    width, height = fig.get_size_inches()
    left, right, gap = 0.7, 0.15, 0.85
    axis_width = (width - left - right - gap * (len(names) - 1)) / len(names)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=0.5 / height, top=1 - 0.35 / height,
                        wspace=gap / axis_width)  # fmt: skip
    try:
        return _save(fig, file)
    finally:
        plt.close(fig)


def draw_confusion(report: dict[str, Any], output: str, file: Path) -> Path:
    """A classifier's confusion matrix (`report` as `verbs.report.classification_report` makes it)."""
    plt = _pyplot()
    if plt is None:
        raise RecipeError(f"drawing plots needs matplotlib: {INSTALL}")
    matrix = np.asarray(report["confusion_matrix"])
    size = max(3.0, 0.45 * len(matrix) + 1.5)
    # Margins in inches sized by the longest class name (tick labels at ~0.075 in a character, plus the axis
    # label) instead of tight_layout, which lays every text out once more to measure it: with a number in each
    # cell that doubled the picture's cost (0.4 s CPU for 10 classes, 1.3 s for 20; issue 21).
    margin = 0.45 + 0.075 * max((len(str(label)) for label in report["labels"]), default=1)
    top, right = 0.4, 0.15
    fig, ax = plt.subplots(figsize=(size + margin + right, size + margin + top))
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=margin / width, right=1 - right / width, bottom=margin / height, top=1 - top / height)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(matrix)), report["labels"], rotation=90)
    ax.set_yticks(range(len(matrix)), report["labels"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{output}: accuracy {report['accuracy']:.3f}")
    if len(matrix) <= 20:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > matrix.max() / 2 else "black")  # fmt: skip
    try:
        return _save(fig, file)
    finally:
        plt.close(fig)


def save_plots(folder: Path, history: History | None, reports: dict[str, dict[str, Any]]) -> list[Path]:
    """A run folder's pictures: learning_curves.png and confusion_<output>.png per classifier output; returns
    the files written ([] without matplotlib)."""
    if _pyplot() is None:
        return []
    written: list[Path] = []
    if history and curve_names([history]):
        written.append(draw_curves({"": history}, folder / "learning_curves.png"))
    for output, report in reports.items():
        if report.get("kind") == "classification":
            written.append(draw_confusion(report, output, folder / f"confusion_{output}.png"))
    return written


def run_label(run: Path, others: list[Path]) -> str:
    """A run's legend label: its folder's last two parts (`mnist/20260101-120000`), enough to tell them apart."""
    parts = run.resolve().parts
    label = "/".join(parts[-2:])
    if sum(1 for o in others if "/".join(o.resolve().parts[-2:]) == label) > 1:
        return str(run)
    return label


def read_history(run: Path) -> History:
    """A run folder's history.json (every finished epoch's metrics), checked to be what a run writes."""
    from dlrun.files import read_regular

    if not run.is_dir():
        raise RecipeError(f"{run}: not a run folder")
    file = run / "history.json"
    if not file.exists():
        raise RecipeError(f"{run}: no history.json (the run finished no epoch, or this is not a run folder)")
    try:
        data = json.loads(read_regular(file, 64 * 2**20, "history file"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(x, int | float) for x in v) for v in data.values()
    ):
        raise RecipeError(f"{file}: expected an object of number lists (metric -> per-epoch values)")
    return {str(k): [float(x) for x in v] for k, v in data.items()}


def plot_runs(runs: list[Path], out: Path, metric: str | None = None) -> dict[str, Any]:
    """`dlrun plot`: the runs' learning curves overlaid in one picture (PNG or SVG by `out`'s suffix)."""
    if out.suffix.lower() not in FORMATS:
        raise RecipeError(f"--out writes {' or '.join(FORMATS)}, not {out.suffix or 'a file without suffix'!r}")
    if out.is_dir():
        raise RecipeError(f"--out {out} is a folder; give a file name ending in .png or .svg")
    histories = {run_label(r, runs): read_history(r) for r in runs}
    drawn = curve_names(list(histories.values()), metric)
    draw_curves(histories, out, metric)
    return {"output": str(out), "runs": [str(r) for r in runs], "metrics": drawn}


def _save(fig: Figure, path: Path) -> Path:
    from dlrun.engine.rundir import atomic_target

    suffix = path.suffix.lower()
    with atomic_target(path, suffix) as tmp:
        options = {"pil_kwargs": {"compress_level": PNG_COMPRESSION}} if suffix == ".png" else {}
        fig.savefig(tmp, dpi=110, format=suffix[1:], **options)
    return path
