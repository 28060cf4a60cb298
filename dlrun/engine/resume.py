"""Which run folder a `dlrun train` continues, decided before any heavy import.

`--run-id ID` names the folder (`runs/<name>/<ID>`): started again after a crash or a preemption, the same
command continues that folder from its last state; a finished run is reported and not retrained; a folder
whose recipe differs is refused. `--resume auto` means the run id of the latest resumable run of the same
recipe (or a new run when there is none). "The same recipe" is the recipe as a run folder records it
(resolved, data paths absolute), so overrides count and comments or key order do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dlrun.engine.rundir import RunDir
from dlrun.errors import RecipeError, format_path
from dlrun.recipe.compose import LoadedRecipe, dump_yaml
from dlrun.util import flatten

AUTO = Path("auto")  # `--resume auto`


def recorded_recipe(loaded: LoadedRecipe) -> dict[str, Any]:
    """The resolved recipe as a run folder's recipe.yaml holds it (data paths absolute)."""
    from dlrun.data.sources import absolute_data_paths

    doc = loaded.resolved()
    doc.pop("$schema", None)
    if isinstance(doc.get("data"), dict):
        doc["data"] = absolute_data_paths(doc["data"], loaded.base_dir)
    return doc


def recipe_difference(run: RunDir, loaded: LoadedRecipe) -> str | None:
    """The first recipe key whose value differs between `run`'s recipe.yaml and `loaded` (None: same recipe)."""
    try:
        recorded = flatten(yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return "recipe.yaml (unreadable)"
    wanted = flatten(yaml.safe_load(dump_yaml(recorded_recipe(loaded))))
    for key in [*wanted, *(k for k in recorded if k not in wanted)]:
        if recorded.get(key, _MISSING) != wanted.get(key, _MISSING):
            return format_path(key)
    return None


_MISSING = object()


def run_folder(runs_root: Path, name: str, run_id: str) -> Path:
    """`runs_root/name/run_id`, refusing an id that is not a plain folder name."""
    if not run_id or run_id in (".", "..") or any(c in run_id for c in "/\\\0") or not run_id.isprintable():
        raise RecipeError(f"--run-id {run_id!r} is not a plain folder name")
    return runs_root.resolve() / name / run_id


def resumable(run: RunDir) -> bool:
    """A run folder with a saved state and no final model."""
    return (
        not run.model.is_file()
        and (run.path / "resume" / "state.npz").is_file()
        and (run.path / "resume" / "state.json").is_file()
    )


def latest_resumable(runs_root: Path, loaded: LoadedRecipe) -> str | None:
    """The folder name (run id) of the most recently saved resumable run of this recipe, or None."""
    base = runs_root / loaded.recipe.name
    if not base.is_dir():
        return None
    candidates = [RunDir(p) for p in base.iterdir() if (p / "recipe.yaml").is_file()]
    candidates = [r for r in candidates if resumable(r) and recipe_difference(r, loaded) is None]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r.path / "resume" / "state.npz").stat().st_mtime).path.name


def settle_run_id(runs_root: Path, loaded: LoadedRecipe, run_id: str | None, resume: Path | None) -> str | None:
    """The run id a train command continues (None: a new timestamped run); refuses an id whose folder holds
    another recipe. `resume` is `--resume`: AUTO picks the latest resumable run."""
    if resume == AUTO:
        if run_id is not None:
            raise RecipeError("--resume auto picks a run itself; give it or --run-id, not both")
        return latest_resumable(runs_root, loaded)
    if run_id is None:
        return None
    if resume is not None:
        raise RecipeError("--run-id names the run to continue; give it or --resume RUN_DIR, not both")
    folder = run_folder(runs_root, loaded.recipe.name, run_id)
    if (folder / "recipe.yaml").is_file() and (key := recipe_difference(RunDir(folder), loaded)) is not None:
        raise RecipeError(
            f"run {run_id!r} ({folder}) was started from a different recipe ({key} differs); "
            "give another --run-id, or the recipe it was started with"
        )
    return run_id


def finished_run(runs_root: Path, loaded: LoadedRecipe, run_id: str | None) -> RunDir | None:
    """The run folder of `run_id` when that run already finished (its model saved), else None."""
    if run_id is None:
        return None
    run = RunDir(run_folder(runs_root, loaded.recipe.name, run_id))
    return run if run.model.is_file() and run.recipe.is_file() else None


def open_run_folder(runs_root: Path, name: str, run_id: str) -> tuple[RunDir, bool]:
    """The folder of `run_id`, created when new; and whether it is new or restarts from nothing (no state
    saved yet), so the run record is (re)written."""
    folder = run_folder(runs_root, name, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    run = RunDir(folder)
    (folder / "error.log").unlink(missing_ok=True)  # an earlier attempt's failure is not this attempt's
    return run, not resumable(run)
