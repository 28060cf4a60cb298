"""`dlrun tune`: run a recipe's `search:` as an Optuna study in a study folder, resumable.

Study folder layout:
  study.json         what the study asks (space + objective, and their sha256), the recipe and overrides
  study.journal      Optuna's journal storage: every trial, its state, parameters and per-epoch values
  trials/NNNN/<name>/<ts>/  each trial's ordinary run folder (recipe.yaml replays it with `dlrun train`)
  leaderboard.csv    all trials, best first (also .json); rewritten after every trial
  best.yaml          the best complete trial's resolved recipe, without `search:`

Why Optuna: a trial is a recipe plus `--set` overrides, and Optuna's define-by-run `trial.suggest_*`
maps each recipe path to a value directly (conditional parameters are plain `if`s); its journal storage
lets a study resume after a crash or with a larger budget; failed and pruned trials are kept with their
state; TPE, CMA-ES and QMC samplers and median/Hyperband pruning come with it.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.console import say
from dlrun.engine.rundir import atomic_write_text
from dlrun.errors import RecipeError
from dlrun.loading import load_recipe
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.search import PARAMS_METRIC, SearchSpec
from dlrun.verbs.tune.leaderboard import TuneResult, write_results
from dlrun.verbs.tune.space import Space, check_space
from dlrun.verbs.tune.trial import TrialFailed, TrialObjective, counts, finished_trials
from dlrun.verbs.tune.workers import STUDY_NAME, StudyLock, fail_stale, open_storage, run_workers

if TYPE_CHECKING:
    from types import ModuleType

    import optuna


def load_space(recipe: Path, overrides: tuple[str, ...] | list[str] = ()) -> tuple[LoadedRecipe, Space]:
    """Load the recipe and check its `search:` section (paths, `when`, every value through validation)."""
    base = load_recipe(recipe, overrides)
    spec = base.recipe.search
    if spec is None:
        raise RecipeError(
            "this recipe has no `search:` section; add one, e.g. "
            "`search: {space: {compile.optimizer.learning_rate: {float: [1.0e-4, 1.0e-1], log: true}}}`",
            location=base.doc.locate(()),
        )
    space = check_space(base.doc, base.recipe, spec, lambda extra: load_recipe(recipe, [*overrides, *extra]))
    return base, space


def run_study(
    recipe: Path,
    *,
    overrides: tuple[str, ...] | list[str] = (),
    trials: int | None = None,
    study_dir: Path | None = None,
    timeout: float | None = None,
    trust: bool = False,
    quiet: bool = False,
    storage: str | None = None,
    workers: int = 1,
) -> TuneResult:
    """Run (or continue) the study until it holds `trials` finished trials (default: `search.trials`).

    `storage` (default: the study folder's journal file) may be shared by several workers: this process,
    others started by hand on the same study (and folder), or `workers` local processes started here."""
    _optuna()
    overrides = tuple(overrides)
    base, space = load_space(recipe, overrides)
    spec = space.spec
    assert spec is not None
    target = trials if trials is not None else spec.trials
    if target < 1:
        raise RecipeError(f"--trials must be at least 1, got {target}")
    if workers < 1:
        raise RecipeError(f"--workers must be at least 1, got {workers}")
    folder = study_dir if study_dir is not None else Path("studies") / base.recipe.name
    store = open_storage(folder, storage)  # a bad --storage leaves no study folder behind
    folder.mkdir(parents=True, exist_ok=True)
    study = _create_study(store, spec, base)
    _check_same_question(folder, base, space, study, recipe, overrides)
    with StudyLock(folder):
        fail_stale(study, store)
    done = finished_trials(study)
    if done:
        say(f"study {folder}: {done} trial(s) done, {max(0, target - done)} to go", quiet=quiet)
    if workers > 1:
        run_workers(recipe, overrides, target, folder, timeout, trust, storage, workers)
        result = write_results(study, space, folder)
        result.ran = finished_trials(study) - done
    else:
        objective = TrialObjective(recipe, overrides, space, folder, base.doc, trust=trust, quiet=quiet, target=target)
        try:
            _optimize(study, objective, spec, base, folder, target, timeout)
        finally:
            result = write_results(study, space, folder)
        result.ran = objective.ran
    if not any(r["state"] == "complete" for r in result.rows) and result.rows:
        errors = [r["error"] for r in result.rows if r.get("error")]
        if errors:
            raise RecipeError(f"no trial completed; the first failure: {errors[0]}")
    return result


def _optuna() -> ModuleType:
    try:
        import optuna
    except ImportError:
        raise RecipeError("dlrun tune needs Optuna: pip install 'dlrun[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _create_study(storage: optuna.storages.BaseStorage, spec: SearchSpec, base: LoadedRecipe) -> optuna.Study:
    import optuna

    goals = [o.goal for o in spec.objectives]
    single = len(goals) == 1 and spec.primary.metric != PARAMS_METRIC
    return optuna.create_study(
        storage=storage,
        study_name=STUDY_NAME,
        directions=goals,
        pruner=_pruner(spec, base) if single else optuna.pruners.NopPruner(),  # Optuna prunes one objective only
        load_if_exists=True,
    )


def _optimize(
    study: optuna.Study,
    objective: TrialObjective,
    spec: SearchSpec,
    base: LoadedRecipe,
    folder: Path,
    target: int,
    timeout: float | None,
) -> None:
    """One trial at a time until the study holds `target` finished-or-running trials (all workers together).

    Under the study folder's lock this worker counts the trials and creates its trial; the lock is released
    as soon as the trial is recorded as running under this worker's name, so the training runs in parallel
    with the other workers'. The sampler is seeded once, at this worker's first trial, offset by the trials
    the study holds then: workers started together get distinct offsets (each sees the others' running
    trials), and a resumed study does not replay the first session's random draws."""
    import optuna

    start = time.monotonic()
    seeded = False
    while timeout is None or time.monotonic() - start < timeout:
        lock = StudyLock(folder)
        with lock:
            fail_stale(study, study._storage)
            held = study.get_trials(deepcopy=False)
            if sum(1 for t in held if counts(t) or t.state == optuna.trial.TrialState.RUNNING) >= target:
                return
            if not seeded:
                study.sampler = _sampler(spec, base, offset=len(held))
                seeded = True
            objective.claimed = lock.release
            study.optimize(
                objective, n_trials=1, catch=(TrialFailed,), callbacks=[objective.after], gc_after_trial=True
            )


# ----------------------------------------------------------------------------------------------------
# samplers, pruners, the study's question


def _sampler(spec: SearchSpec, base: LoadedRecipe, *, offset: int) -> optuna.samplers.BaseSampler:
    import optuna

    # A resumed study must not replay the first session's random draws: offset the seed by the trials held.
    seed = (spec.seed if spec.seed is not None else base.recipe.seed) + offset
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if spec.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise base.doc.error(
                "sampler cmaes needs the `cmaes` package: pip install cmaes", ("search", "sampler")
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(spec: SearchSpec, base: LoadedRecipe) -> optuna.pruners.BasePruner:
    import optuna

    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "hyperband":
        epochs = sum(s.epochs for s in base.recipe.train.stages) or base.recipe.train.epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def _recipe_digest(base: LoadedRecipe) -> str:
    doc = base.resolved()
    doc.pop("search", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _check_same_question(
    folder: Path, base: LoadedRecipe, space: Space, study: optuna.Study, recipe: Path, overrides: tuple[str, ...]
) -> None:
    """A study answers one question: refuse a changed space/objective once it holds results."""
    import optuna

    file = folder / "study.json"
    info: dict[str, Any] = {
        "recipe": str(recipe),
        "overrides": list(overrides),
        "fingerprint": space.fingerprint(),
        "question": space.describe(),
        "recipe_sha256": _recipe_digest(base),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if file.is_file():
        stored = json.loads(file.read_text(encoding="utf-8"))
        held = study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        if stored.get("fingerprint") != info["fingerprint"] and held:
            raise RecipeError(
                f"the search space changed since the study in {folder} began ({_differences(stored['question'], info['question'])}); "
                "its trials would not be comparable. Restore the search section, or start a new study with "
                "another --study-dir",
                location=base.doc.locate(("search",)),
                path=("search",),
            )
        if stored.get("fingerprint") == info["fingerprint"]:
            if stored.get("recipe_sha256") != info["recipe_sha256"]:
                say(f"warning: the recipe outside `search:` changed since the study in {folder} began")
            return
        info["created"] = stored.get("created", info["created"])
    atomic_write_text(file, json.dumps(info, indent=2, default=str) + "\n")


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    notes = []
    old_space, new_space = old.get("space", {}), new.get("space", {})
    for key in new_space:
        if key not in old_space:
            notes.append(f"{key} added")
        elif old_space[key] != new_space[key]:
            notes.append(f"{key} changed")
    notes += [f"{key} removed" for key in old_space if key not in new_space]
    if old.get("objective") != new.get("objective"):
        notes.append("objective changed")
    return ", ".join(notes) or "changed"
