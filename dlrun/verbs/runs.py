"""Listing and comparing run folders: what ran, how it ended, what it scored, how recipes differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dlrun.engine.liveness import is_live
from dlrun.engine.rundir import RunDir
from dlrun.errors import RecipeError, format_path
from dlrun.util import flatten


def status(run: RunDir) -> str:
    """finished, running (a live process trains in it), failed, interrupted (resumable) or incomplete."""
    if run.model.is_file():
        return "finished"
    if is_live(run.path):
        return "running"
    if (run.path / "error.log").is_file():
        return "failed"
    if (run.path / "resume" / "state.json").is_file():
        return "interrupted"
    return "incomplete"


def failure_reason(run: RunDir) -> str | None:
    """Why a failed run failed: the last line of its error.log (the error, or a traceback's exception)."""
    log = run.path / "error.log"
    if run.model.is_file() or not log.is_file():
        return None
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]  # dlrun's one line, when it wrote one
    return (errors or lines or [""])[-1].removeprefix("error: ")[:300] or None


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run folder under `root`, newest first, with status, epochs and evaluation metrics."""
    if not root.is_dir():
        raise RecipeError(f"runs folder not found: {root}")
    rows = []
    for recipe in sorted(root.glob("*/*/recipe.yaml"), key=lambda p: p.parent.name, reverse=True):
        run = RunDir(recipe.parent)
        history = run.read_json("history.json") or {}
        evaluation = run.read_json("eval.json") or {}
        rows.append({
            "run": str(run.path),
            "name": run.path.parent.name,
            "started": run.path.name,
            "status": status(run),
            "reason": failure_reason(run),
            "epochs": len(history.get("epoch", [])),
            "metrics": evaluation.get("metrics", {}),
        })  # fmt: skip
    return rows


def compare_runs(paths: list[Path]) -> dict[str, Any]:
    """Recipe keys whose values differ between runs, and every run's metrics side by side."""
    if len(paths) < 2:
        raise RecipeError("compare needs at least two run folders")
    runs = [RunDir.open(p) for p in paths]
    flat = [
        {format_path(k): v for k, v in flatten(yaml.safe_load(r.recipe.read_text(encoding="utf-8"))).items()}
        for r in runs
    ]
    keys = sorted(set().union(*flat))
    differences = {k: [f.get(k) for f in flat] for k in keys if len({repr(f.get(k)) for f in flat}) > 1}
    metrics = [(r.read_json("eval.json") or {}).get("metrics", {}) for r in runs]
    names = sorted(set().union(*metrics))
    return {
        "runs": [str(r.path) for r in runs],
        "differences": differences,
        "metrics": {m: [mt.get(m) for mt in metrics] for m in names},
    }
