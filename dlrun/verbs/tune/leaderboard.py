"""A study's results: the leaderboard (all trials, best first; leaderboard.csv/.json) and best.yaml (the best
complete trial's resolved recipe), rewritten after every trial; the table `dlrun tune` prints."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.engine.rundir import atomic_write_text
from dlrun.recipe.search import _label
from dlrun.verbs.tune.space import Space

if TYPE_CHECKING:
    import optuna
    from rich.table import Table


@dataclass
class TuneResult:
    """What a `dlrun tune` session left in the study folder. `metric`/`goal` are the first objective's;
    `objectives` lists every (metric, goal); `pareto` the trial numbers on the Pareto front (multi-objective)."""

    study_dir: Path
    metric: str
    goal: str
    rows: list[dict[str, Any]]  # every trial, best first
    ran: int  # trials run in this session
    best: dict[str, Any] | None = None
    best_recipe: Path | None = None
    keys: list[str] = field(default_factory=list)
    objectives: list[tuple[str, str]] = field(default_factory=list)
    pareto: list[int] = field(default_factory=list)


def _state_name(trial: optuna.trial.FrozenTrial) -> str:
    import optuna

    state = optuna.trial.TrialState
    if trial.state == state.FAIL:
        return "interrupted" if trial.user_attrs.get("interrupted") else "failed"
    return {state.COMPLETE: "complete", state.PRUNED: "pruned", state.RUNNING: "running"}.get(trial.state, "waiting")


def _value(trial: optuna.trial.FrozenTrial, index: int = 0) -> float | None:
    """The trial's value of objective `index` (a pruned trial: its last reported value)."""
    if trial.values is not None:
        return float(trial.values[index])
    if index == 0 and trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _label(value)


def leaderboard(study: optuna.Study, space: Space) -> tuple[list[dict[str, Any]], list[int]]:
    """Every trial as a row, best first, and the Pareto front's trial numbers (multi-objective; else []).
    One objective: complete (by objective), pruned (by last value), then the rest. Several: the complete
    trials on the Pareto front (by the first objective), the other complete ones, then the rest."""
    objectives = space.spec.objectives
    multi = len(objectives) > 1
    maximize = objectives[0].goal == "maximize"
    front = sorted(t.number for t in study.best_trials) if multi and _any_complete(study) else []
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.user_attrs.get("values") or {}
        row: dict[str, Any] = {"rank": None, "trial": t.number, "state": _state_name(t)}
        for i, o in enumerate(objectives):
            row[o.metric] = _value(t, i)
        if multi:
            row["pareto"] = t.number in front
        for p in space.params:
            row[p.key] = values.get(p.key)
        row["epochs"] = t.user_attrs.get("epochs")
        row["seconds"] = round(t.duration.total_seconds(), 2) if t.duration else None
        row["run"] = t.user_attrs.get("run")
        row["error"] = t.user_attrs.get("error")
        rows.append(row)
    order = {"complete": 0, "pruned": 1, "running": 2, "failed": 3, "interrupted": 4, "waiting": 5}
    metric = objectives[0].metric

    def key(row: dict[str, Any]) -> tuple[int, int, float, int]:
        value = row[metric]
        score = value if value is not None and math.isfinite(value) else math.inf * (-1 if maximize else 1)
        return order[row["state"]], 0 if row.get("pareto") else 1, -score if maximize else score, row["trial"]

    rows.sort(key=key)
    for i, row in enumerate(r for r in rows if r["state"] == "complete"):
        row["rank"] = i + 1
    return rows, front


def _any_complete(study: optuna.Study) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def write_results(study: optuna.Study, space: Space, folder: Path) -> TuneResult:
    """Write leaderboard.csv/.json and (one objective) best.yaml; return them as a `TuneResult`."""
    objectives = space.spec.objectives
    metric = objectives[0].metric
    rows, front = leaderboard(study, space)
    result = TuneResult(
        study_dir=folder,
        metric=metric,
        goal=objectives[0].goal,
        rows=rows,
        ran=0,
        keys=[p.key for p in space.params],
        objectives=[(o.metric, o.goal) for o in objectives],
        pareto=front,
    )
    doc: dict[str, Any] = {"metric": metric, "goal": result.goal}
    if len(objectives) > 1:
        doc["objectives"] = [{"metric": m, "goal": g} for m, g in result.objectives]
        doc["pareto"] = front
    atomic_write_text(folder / "leaderboard.json", json.dumps({**doc, "trials": rows}, indent=2, default=str) + "\n")
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    atomic_write_text(folder / "leaderboard.csv", buffer.getvalue())
    best = next((r for r in rows if r["state"] == "complete"), None) if len(objectives) == 1 else None
    if best is not None and best["run"] and (folder / best["run"] / "recipe.yaml").is_file():
        result.best = best
        result.best_recipe = folder / "best.yaml"
        text = (folder / best["run"] / "recipe.yaml").read_text(encoding="utf-8")
        values = ", ".join(f"{k}={_fmt(best[k])}" for k in result.keys if best.get(k) is not None)
        header = (
            f"# best trial of the study in {folder}: trial {best['trial']}, {metric} = {best[metric]:.6g} "
            f"({result.goal})\n# values: {values}\n# replay: dlrun train best.yaml\n"
        )
        atomic_write_text(result.best_recipe, header + text)
    return result


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def render_leaderboard(result: TuneResult, *, limit: int | None = None) -> Table:
    """A rich table of the leaderboard (best first)."""
    from rich.table import Table

    done = [r for r in result.rows if r["state"] in ("complete", "pruned", "failed")]
    objectives = result.objectives or [(result.metric, result.goal)]
    asked = ", ".join(f"{m} ({g})" for m, g in objectives)
    front = f"; Pareto front: trials {', '.join(map(str, result.pareto))}" if len(objectives) > 1 else ""
    title = f"{result.study_dir}: {len(done)} trials, {asked}{front}"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("state")
    for metric, _ in objectives:
        table.add_column(metric, justify="right")
    if len(objectives) > 1:
        table.add_column("pareto")
    for key in result.keys:
        table.add_column(key, justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("s", justify="right")
    for row in result.rows[:limit]:
        shown = [_objective_cell(row[m]) for m, _ in objectives]
        if len(objectives) > 1:
            shown.append("yes" if row.get("pareto") else "")
        table.add_row(
            str(row["rank"] or ""),
            str(row["trial"]),
            row["state"],
            *shown,
            *("" if row[k] is None else _fmt(row[k]) for k in result.keys),
            "" if row["epochs"] is None else str(row["epochs"]),
            "" if row["seconds"] is None else f"{row['seconds']:.1f}",
        )
    return table


def _objective_cell(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1000 else f"{value:.4f}"
