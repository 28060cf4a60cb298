"""Step-level resume: saving the run's state inside an epoch, and finishing a cut epoch at its exact batch.

In deterministic mode the training stream is a pure function of (seed, epoch) (engine.feed), so the state
after `k` batches of epoch `e` (every model, optimizer and metric variable; Keras' seed generators are
variables too) plus the stream for epoch `e` with its first `k` batches skipped continues exactly where
the interrupted run was: the weights at the end are bit-identical to an uninterrupted run's. The state is
saved every `train.checkpoint_every` steps or seconds, and when SIGINT/SIGTERM (a scheduler's preemption)
stops training at a step boundary. Imported only when training, so Keras is imported at the top.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import keras

from dlrun.engine.callbacks import Logs, ResumeState
from dlrun.errors import RecipeError
from dlrun.recipe.schema import Recipe

if TYPE_CHECKING:
    from dlrun.engine.feed import Feed


_SECONDS = {"s": 1, "m": 60, "h": 3600}


def interval(every: int | str | None) -> tuple[int | None, float | None]:
    """`train.checkpoint_every` as (steps, seconds): an int is steps, "90s"/"10m"/"2h" a duration."""
    if every is None:
        return None, None
    if isinstance(every, int):
        return every, None
    return None, float(int(every[:-1]) * _SECONDS[every[-1]])


def step_resume_refusal(recipe: Recipe, *, arrays: bool, split: bool) -> str | None:
    """Why this run cannot save and resume mid-epoch state exactly (None: it can). `arrays`: the training
    data reaches `fit` as in-memory arrays; `split`: keras.distribution splits its batches."""
    if not recipe.train.deterministic:
        return "train.checkpoint_every needs train.deterministic: true (an epoch's batches must be replayable)"
    if split or recipe.train.distribute is not None:
        return "train.checkpoint_every is not supported with train.distribute (those runs resume per epoch)"
    if not arrays:
        return (
            "train.checkpoint_every needs in-memory training data (arrays, without sample weights or text); "
            "data streamed from files resumes per epoch"
        )
    if recipe.compile.steps_per_execution not in ("auto", 1):
        return "train.checkpoint_every needs compile.steps_per_execution 1 or auto (one step per call)"
    if keras.backend.backend() == "torch":
        return (
            "train.checkpoint_every is not supported on the torch backend (its dropout draws from a global generator)"
        )
    return None


def check_checkpoint_every(recipe: Recipe, *, arrays: bool, split: bool) -> None:
    """A located error when the recipe asks for step checkpoints this run cannot resume exactly."""
    if recipe.train.checkpoint_every is not None:
        refusal = step_resume_refusal(recipe, arrays=arrays, split=split)
        if refusal is not None:
            raise RecipeError(refusal, path=("train", "checkpoint_every"))


def step_checkpoints(
    recipe: Recipe,
    state: ResumeState,
    history: dict[str, list[float]],
    interrupted: Callable[[], bool],
    *,
    arrays: bool,
    split: bool,
    steps: int,
    resume_epoch: int,
    resume_step: int,
) -> list[StepCheckpoint]:
    """The step-checkpoint callback when this run can resume mid-epoch exactly (it then also saves when
    interrupted, without `checkpoint_every`); none otherwise."""
    check_checkpoint_every(recipe, arrays=arrays, split=split)
    if step_resume_refusal(recipe, arrays=arrays, split=split) is not None:
        return []
    every_steps, every_seconds = interval(recipe.train.checkpoint_every)
    return [
        StepCheckpoint(
            state,
            history,
            interrupted,
            steps_per_epoch=steps,
            steps=every_steps,
            seconds=every_seconds,
            resume_epoch=resume_epoch,
            resume_step=resume_step,
        )
    ]


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the `ResumeState` inside epochs (every `steps` batches or `seconds`, and when interrupted), and in
    a resumed run restores the cut epoch's running metrics before its first remaining batch.

    `resume_epoch`/`resume_step`: the epoch a resumed run re-enters after `resume_step` batches (its batches
    are numbered from 0 again by Keras, so positions are offset)."""

    def __init__(
        self,
        state: ResumeState,
        history: dict[str, list[float]],
        interrupted: Callable[[], bool],
        *,
        steps_per_epoch: int,
        steps: int | None,
        seconds: float | None,
        resume_epoch: int = 0,
        resume_step: int = 0,
    ) -> None:
        super().__init__()
        self.state, self.history, self.interrupted = state, history, interrupted
        self.steps_per_epoch, self.steps, self.seconds = steps_per_epoch, steps, seconds
        self.resume_epoch, self.resume_step = resume_epoch, resume_step
        self.epoch = 0
        self.offset = 0
        self.last_save = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self.epoch = epoch
        self.offset = self.resume_step if epoch == self.resume_epoch else 0

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        if batch == 0 and self.offset:  # fit has reset the metrics: bring back those of the cut epoch's start
            self.state.restore_metrics(self.model)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        position = self.offset + batch + 1
        if position >= self.steps_per_epoch:
            return  # the epoch is complete: its end saves the state (unless interrupted: then the last one stays)
        now = time.monotonic()
        due = (self.steps is not None and (self.epoch * self.steps_per_epoch + position) % self.steps == 0) or (
            self.seconds is not None and now - self.last_save >= self.seconds
        )
        if not (due or self.interrupted()):
            return
        if any(isinstance(v, float) and not math.isfinite(v) for v in _floats(logs)):
            return  # never overwrite the last good state with a diverged one
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX keeps the latest values outside the variables until synced
            sync()
        self.state.save(self.model, self.epoch, self.history, step=position)
        self.last_save = time.monotonic()


def _floats(logs: Logs) -> list[float]:
    out = []
    for value in (logs or {}).values():
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            continue
    return out


def partial_feed(feed: Feed, skip: int, steps_per_epoch: int, model: keras.Model) -> Feed:
    """`feed` (one epoch of the deterministic stream) with its first `skip` batches left out.

    The model's compiled metrics are built here from one batch (TensorFlow builds them only when the first
    step runs, after the cut epoch's running values would be restored into them); fit resets them anyway."""
    from dataclasses import replace

    x, y = next(iter(feed.x))
    model.compute_metrics(x, y, model(x, training=False), sample_weight=None)
    return replace(feed, x=feed.x.skip(skip), steps_per_epoch=steps_per_epoch - skip)
