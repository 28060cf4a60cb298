"""The recipe's `search:` (`dlrun tune`) and `ensemble:` (`dlrun ensemble`) sections.

Kept beside the schema, in the recipe layer, so that validating a recipe needs neither the tune nor the
ensemble code (which checks and runs them); `dlrun.recipe.schema.Recipe` holds both.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dlrun.recipe.base import Strict

# Metric names whose direction is obvious; anything else needs `direction:`.
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "mape", "msle", "hinge", "crossentropy", "divergence", "poisson")
_HIGHER_IS_BETTER = ("accuracy", "acc", "auc", "precision", "recall", "f1", "iou", "r2")


class SearchParam(Strict):
    """One searched value: exactly one of `choice: [...]`, `int: [low, high]` or `float: [low, high]`.

    Ranges include both ends; `log: true` samples on a log scale (low > 0); `step` quantizes a range.
    `when: {other.key: value}` (or a list of values) searches this value only when an earlier key has it.
    """

    choice: list[Any] | None = Field(default=None, min_length=1, description="The values to choose from.")
    int_: list[int] | None = Field(default=None, alias="int", min_length=2, max_length=2, description="[low, high]")
    float_: list[float] | None = Field(
        default=None, alias="float", min_length=2, max_length=2, description="[low, high]"
    )
    log: bool = Field(default=False, description="Ranges: sample on a log scale.")
    step: int | float | None = Field(default=None, gt=0, description="Ranges: only multiples of step above low.")
    when: dict[str, Any] | None = Field(
        default=None, min_length=1, description="Search this only when earlier keys have these values."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        kinds = [k for k, v in (("choice", self.choice), ("int", self.int_), ("float", self.float_)) if v is not None]
        if len(kinds) != 1:
            raise PydanticCustomError(
                "param_kind",
                "a search parameter has exactly one of: choice, int, float (got {got})",
                {"got": ", ".join(kinds) or "none"},
            )
        if self.choice is not None:
            if self.log or self.step is not None:
                raise PydanticCustomError("param_choice", "`log` and `step` are for int/float ranges, not `choice`")
            labels = [_label(c) for c in self.choice]
            if len(set(labels)) != len(labels):
                dup = next(c for c in labels if labels.count(c) > 1)
                raise PydanticCustomError("param_dup", "`choice` lists {dup} twice", {"dup": dup})
            return self
        low, high = self.bounds
        if low > high:
            raise PydanticCustomError(
                "param_range", "the range's low end {low} is above its high end {high}", {"low": low, "high": high}
            )
        if self.log and low <= 0:
            raise PydanticCustomError("param_log", "a log range needs low > 0 (got {low})", {"low": low})
        if self.log and self.step is not None and not (self.int_ is not None and self.step == 1):
            raise PydanticCustomError("param_log_step", "`step` cannot be combined with `log: true`")
        if self.int_ is not None and self.step is not None and not isinstance(self.step, int):
            raise PydanticCustomError(
                "param_int_step", "an int range needs an integer step (got {step})", {"step": self.step}
            )
        return self

    @property
    def kind(self) -> Literal["choice", "int", "float"]:
        return "choice" if self.choice is not None else "int" if self.int_ is not None else "float"

    @property
    def bounds(self) -> tuple[float, float]:
        values = self.int_ if self.int_ is not None else self.float_
        assert values is not None
        return values[0], values[1]

    def candidates(self) -> list[Any]:
        """Values to probe: every choice, or both ends of the range."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.bounds
        if self.step is not None:  # the highest value on the step grid
            n = int((high - low) // self.step)
            high = low + n * self.step
            high = int(high) if self.int_ is not None else float(high)
        return [low] if low == high else [low, high]


PARAMS_METRIC = "params"  # the model's parameter count, an objective that is no history key


class SearchObjective(Strict):
    """The metric a trial is scored by: a key of the training history (`val_accuracy`, `val_loss`, ...), or
    `params` (the model's parameter count, minimized)."""

    metric: str = Field(
        default="val_loss", min_length=1, description="A history key: val_accuracy, val_loss, ...; or `params`."
    )
    direction: Literal["max", "min", "maximize", "minimize"] | None = Field(
        default=None, description="Inferred for losses (min) and accuracy-like metrics (max)."
    )
    at: Literal["best", "last"] = Field(default="best", description="Score the best epoch, or the last one.")

    @model_validator(mode="after")
    def _direction(self) -> SearchObjective:
        if self.direction is None and _infer_direction(self.metric) is None:
            raise PydanticCustomError(
                "objective_direction",
                "cannot tell whether {metric} is better high or low; add `direction: max` or `direction: min`",
                {"metric": repr(self.metric)},
            )
        return self

    @property
    def goal(self) -> Literal["maximize", "minimize"]:
        """Optuna's direction."""
        direction = self.direction or _infer_direction(self.metric)
        return "maximize" if direction in ("max", "maximize") else "minimize"


class SearchSpec(Strict):
    """Hyperparameter search (`dlrun tune`): recipe paths to search, the objective, the budget.

    `objective` is one metric, or a list (`[val_loss, params]`, items as metric names or `{metric, direction,
    at}`) for a multi-objective search: the leaderboard then shows the Pareto front, and trials are not pruned.
    """

    space: dict[str, SearchParam] = Field(min_length=1, description="Recipe path (as for --set) -> parameter.")
    objective: SearchObjective | list[SearchObjective] = Field(
        default_factory=SearchObjective, description="One objective, or a list of them (multi-objective)."
    )
    trials: int = Field(default=20, ge=1, description="How many trials the study should hold in total.")
    sampler: Literal["tpe", "random", "cmaes", "qmc"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = Field(
        default="median", description="Stop unpromising trials early from their per-epoch objective."
    )
    seed: int | None = Field(default=None, description="Sampler seed (default: the recipe's seed).")

    @field_validator("objective", mode="before")
    @classmethod
    def _metric_names(cls, value: Any) -> Any:
        """`objective: val_loss` and list items given as metric names mean `{metric: <name>}`."""
        if isinstance(value, str):
            return {"metric": value}
        if isinstance(value, list):
            return [{"metric": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _distinct_objectives(self) -> SearchSpec:
        metrics = [o.metric for o in self.objectives]
        if not metrics:
            raise PydanticCustomError("objective_empty", "`objective` lists no metric")
        if len(set(metrics)) != len(metrics):
            dup = next(m for m in metrics if metrics.count(m) > 1)
            raise PydanticCustomError("objective_dup", "`objective` lists {dup} twice", {"dup": repr(dup)})
        return self

    @property
    def objectives(self) -> list[SearchObjective]:
        """Every objective, in order (one for a single-objective search)."""
        return list(self.objective) if isinstance(self.objective, list) else [self.objective]

    @property
    def primary(self) -> SearchObjective:
        """The first objective (the only one, unless the search is multi-objective)."""
        return self.objectives[0]


def _infer_direction(metric: str) -> str | None:
    if metric == PARAMS_METRIC:
        return "min"
    name = metric.lower().removeprefix("val_")
    if any(word in name for word in _LOWER_IS_BETTER):
        return "min"
    if any(word in name.split("_") or name.endswith(word) for word in _HIGHER_IS_BETTER):
        return "max"
    return None


def _label(value: Any) -> str:
    """A choice as text (how it is shown, and how Optuna stores a non-scalar choice)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


class EnsembleSpec(Strict):
    """Train several members and combine them (`dlrun ensemble RECIPE`): seeds of this recipe, or recipe files.

    `members: [1, 2, 3]` trains this recipe once per seed; `members: [a.yaml, b.yaml]` trains those recipes
    (relative to this one). Each member is an ordinary run folder; then they are scored as `dlrun ensemble`
    scores run folders.
    """

    members: list[int | str] = Field(
        min_length=2, description="Seeds (this recipe once per seed) or recipe files (relative to this recipe)."
    )
    method: Literal["mean", "vote"] = "mean"
    weights: list[float] | None = Field(default=None, description="One non-negative weight per member.")

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleSpec:
        if len({str(m) for m in self.members}) != len(self.members):
            raise PydanticCustomError("ensemble_members", "`members` lists the same member twice")
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise PydanticCustomError(
                    "ensemble_weights",
                    "`weights` has {n} numbers for {m} members",
                    {"n": len(self.weights), "m": len(self.members)},
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise PydanticCustomError("ensemble_weights", "`weights` must be non-negative with a positive sum")
        return self
