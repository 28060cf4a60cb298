"""One `dlrun tune` trial: the recipe plus the trial's values as `--set` overrides, trained as an ordinary run
in the study folder (`trials/NNNN/`), its score(s) returned to Optuna; and which stored trials count towards
`--trials`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dlrun.console import say
from dlrun.errors import RecipeError, RunInterrupted
from dlrun.loading import load_recipe
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.search import PARAMS_METRIC
from dlrun.util import did_you_mean
from dlrun.verbs.tune.leaderboard import _fmt, _short, _state_name, _value, write_results
from dlrun.verbs.tune.space import Space
from dlrun.verbs.tune.workers import worker_name

if TYPE_CHECKING:
    import optuna

    from dlrun.engine.stages import TrainResult
    from dlrun.recipe.load import Document


class TrialFailed(Exception):
    """A trial's training failed (recorded as an Optuna FAIL trial; the study goes on)."""


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a stored trial counts towards --trials (interrupted or aborted ones are redone)."""
    import optuna

    state = optuna.trial.TrialState
    if trial.state in (state.COMPLETE, state.PRUNED):
        return True
    return trial.state == state.FAIL and not trial.user_attrs.get("interrupted")


def finished_trials(study: optuna.Study) -> int:
    """How many of the study's trials count towards --trials."""
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


class TrialObjective:
    """Trains one trial: the recipe plus this trial's values as `--set` overrides, as an ordinary run."""

    def __init__(
        self,
        recipe: Path,
        overrides: tuple[str, ...],
        space: Space,
        folder: Path,
        doc: Document,
        *,
        trust: bool,
        quiet: bool,
        target: int,
    ) -> None:
        self.recipe, self.overrides, self.space, self.folder = recipe, overrides, space, folder
        self.trust, self.quiet, self.target = trust, quiet, target
        self.ran = 0
        self.doc = doc  # the recipe document, to locate errors in `search:`
        self.claimed: Callable[[], None] = lambda: None  # releases the study lock once this trial is recorded as ours

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        import optuna

        from dlrun.engine.session import train
        from dlrun.verbs.tune import pruning

        trial.set_user_attr("worker", worker_name())
        self.claimed()
        objectives = self.space.spec.objectives
        objective = objectives[0]
        reporting = len(objectives) == 1 and objective.metric != PARAMS_METRIC  # per-epoch values, pruning
        values = self.space.suggest(trial)
        extra = self.space.overrides(values)
        trial.set_user_attr("values", values)
        trial.set_user_attr("overrides", extra)
        try:
            loaded = load_recipe(self.recipe, [*self.overrides, *extra])
        except RecipeError as exc:
            trial.set_user_attr("error", str(exc))
            raise TrialFailed(str(exc)) from None
        _detach_search(loaded)
        link = pruning.TrialLink(trial, objective.metric, objective.goal == "maximize", objective.at)
        try:
            result = train(
                loaded,
                extra_callbacks=[pruning.TrialReporter(link)] if reporting else [],
                runs_root=self.folder / "trials" / f"{trial.number:04d}",
                trust=self.trust,
                quiet=True,
                overrides=(*self.overrides, *extra),
            )
        except (RunInterrupted, KeyboardInterrupt):
            trial.set_user_attr("interrupted", True)
            self._record_run(trial)
            raise
        except RecipeError as exc:
            trial.set_user_attr("error", str(exc))
            self._record_run(trial)
            raise TrialFailed(str(exc)) from None
        except Exception as exc:
            log = getattr(exc, "dlrun_log", None)
            text = f"{type(exc).__name__}: {exc}".splitlines()[0] + (f" (traceback: {log})" if log else "")
            trial.set_user_attr("error", text)
            self._record_run(trial)
            raise TrialFailed(text) from None
        finally:
            _release_models()
        trial.set_user_attr("run", self._relative(result.run.path))
        trial.set_user_attr("epochs", len(result.history.get("epoch", [])))
        trial.set_user_attr("eval", result.metrics)
        if not reporting:
            return self._scores(trial, result, loaded)
        if link.missing is not None:
            trial.set_user_attr("interrupted", True)  # a configuration error, not this trial's fault
            raise self._metric_error(link.missing, loaded)
        if link.pruned_at is not None:
            trial.set_user_attr("pruned_at", link.pruned_at)
            raise optuna.TrialPruned(f"pruned after epoch {link.pruned_at}")
        score = link.score()
        if score is None:
            trial.set_user_attr("error", f"{objective.metric} was never finite")
            raise TrialFailed(f"{objective.metric} was never finite")
        return score

    def _scores(self, trial: optuna.Trial, result: TrainResult, loaded: LoadedRecipe) -> float | tuple[float, ...]:
        """Every objective from the finished run: history metrics (best or last epoch), `params` counted."""
        scores = []
        for o in self.space.spec.objectives:
            if o.metric == PARAMS_METRIC:
                scores.append(float(result.model.count_params()))
                continue
            series = result.history.get(o.metric)
            if series is None:
                trial.set_user_attr("interrupted", True)  # a configuration error, not this trial's fault
                raise self._metric_error([k for k in result.history if k != "epoch"], loaded, o.metric)
            finite = [float(v) for v in series if math.isfinite(float(v))]
            if not finite:
                trial.set_user_attr("error", f"{o.metric} was never finite")
                raise TrialFailed(f"{o.metric} was never finite")
            best = max(finite) if o.goal == "maximize" else min(finite)
            scores.append(finite[-1] if o.at == "last" else best)
        return scores[0] if len(scores) == 1 else tuple(scores)

    def _record_run(self, trial: optuna.Trial) -> None:
        runs = sorted((self.folder / "trials" / f"{trial.number:04d}").glob("*/*"))
        if runs:
            trial.set_user_attr("run", self._relative(runs[-1]))

    def _relative(self, path: Path) -> str:
        """Run folders are recorded relative to the study folder (a moved study still finds them)."""
        try:
            return str(Path(path).resolve().relative_to(self.folder.resolve()))
        except ValueError:
            return str(path)

    def _metric_error(self, logged: list[str], loaded: LoadedRecipe, metric: str | None = None) -> RecipeError:
        metric = metric or self.space.spec.primary.metric
        hint = did_you_mean(metric, logged)
        note = ""
        if metric.startswith("val_") and not any(k.startswith("val_") for k in logged):
            note = "; the data has no validation split: set data.validation_split (e.g. 0.2) or data.splits"
        return RecipeError(
            f"objective metric {metric!r} is not logged by training{hint}; logged: {', '.join(logged)}{note}",
            location=self.doc.locate(("search", "objective", "metric")),
            path=("search", "objective", "metric"),
        )

    def after(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """After each trial: one status line, and the leaderboard files rewritten."""
        self.ran += 1
        state = _state_name(trial)
        shown = " · ".join(
            f"{o.metric} {value:.4g}"
            for i, o in enumerate(self.space.spec.objectives)
            if (value := _value(trial, i)) is not None
        )
        values = " · ".join(f"{_short(k)} {_fmt(v)}" for k, v in (trial.user_attrs.get("values") or {}).items())
        epochs = trial.user_attrs.get("epochs")
        extra = f" · {epochs} epochs" if epochs else ""
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        error = f" · {trial.user_attrs['error']}" if state == "failed" and trial.user_attrs.get("error") else ""
        say(
            f"trial {trial.number} ({finished_trials(study)}/{self.target}): {state} {shown} · {values}{extra}"
            f" · {seconds:.1f} s{error}",
            quiet=self.quiet,
        )
        write_results(study, self.space, self.folder)


def _release_models() -> None:
    """Free the finished trial's graph state so a long study does not grow (or retrace) trial after trial."""
    import keras

    keras.backend.clear_session()


def _detach_search(loaded: LoadedRecipe) -> None:
    """Make a loaded trial recipe an ordinary one (no `search:`); its run's recipe.yaml replays as `dlrun train`."""
    loaded.doc.data.pop("search", None)
    loaded.recipe.search = None
