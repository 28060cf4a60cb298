"""The recipe's `ensemble:` section (kept apart from `dlrun.ensemble`, so validating a recipe stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from dlrun.tune.space import Section


class EnsembleSpec(Section):
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
