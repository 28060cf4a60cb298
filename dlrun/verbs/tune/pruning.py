"""The per-epoch link between a training run and its Optuna trial (reporting and pruning).

`dlrun.verbs.tune.trial` passes a `TrialReporter` to the trial's session as an extra callback: the recipe
is not changed (its recipe.yaml replays as a plain `dlrun train`) and nothing is global.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    import optuna


@dataclass
class TrialLink:
    """The trial being trained, and what its epochs reported."""

    trial: optuna.Trial
    metric: str
    maximize: bool
    at: str  # "best" or "last"
    values: list[float] = field(default_factory=list)
    pruned_at: int | None = None
    missing: list[str] | None = None  # the log keys, when `metric` is not among them

    def score(self) -> float | None:
        """The objective so far: the best or the last finite epoch value."""
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return None
        if self.at == "last":
            return finite[-1]
        return max(finite) if self.maximize else min(finite)


class TrialReporter(keras.callbacks.Callback):
    """Reports the objective to `link`'s trial after each epoch; stops training when Optuna's pruner says so."""

    def __init__(self, link: TrialLink) -> None:
        super().__init__()
        self.link = link

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        link = self.link
        logs = logs or {}
        if link.metric not in logs:
            link.missing = sorted(logs)
            self.model.stop_training = True
            return
        link.values.append(float(logs[link.metric]))
        score = link.score()
        if score is None:
            return
        link.trial.report(score, epoch + 1)
        if link.trial.should_prune():
            link.pruned_at = epoch + 1
            self.model.stop_training = True
