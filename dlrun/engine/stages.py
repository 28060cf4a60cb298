"""The training half of a `RunSession`: each stage compiled and fitted with its callbacks (resumable, at an
epoch or mid-epoch), then the best weights restored, the model saved and evaluated, the verb's pictures drawn
and tracking finished. `engine.session` decides everything before it: backend, data, model and run folder."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.backend import is_chief
from dlrun.console import say
from dlrun.data.prepare import Prepared, SplitData
from dlrun.engine import device_data, display
from dlrun.engine.compile import apply_trainable, compile_model, non_trainable
from dlrun.engine.rundir import RunDir, atomic_target
from dlrun.errors import RecipeError, RunInterrupted
from dlrun.importer import Importer
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import StageSpec
from dlrun.trust import record_run

if TYPE_CHECKING:
    import keras

    from dlrun.engine.artifacts import Evaluation
    from dlrun.engine.callbacks import ResumeState  # imports Keras


@dataclass
class TrainResult:
    """What a training run produced."""

    run: RunDir
    history: dict[str, list[float]]
    metrics: dict[str, float]
    model: keras.Model | None  # None: the run had already finished (--run-id), nothing was loaded
    plots: list[Path] = field(default_factory=list)  # the run folder's pictures (drawn by verbs.train)
    evaluation: Evaluation | None = None  # the eval split's metrics, predictions and targets (for the pictures)


@dataclass(frozen=True)
class RunPolicy:
    """How a session runs, beyond what the recipe says."""

    runs_root: Path = Path("runs")
    trust: bool = False
    quiet: bool = False
    overrides: tuple[str, ...] = ()
    resume: Path | None = None  # continue the interrupted run in this folder (Path("auto"): the latest one)
    run_id: str | None = None  # the run folder runs_root/<name>/<run_id>: created, continued, or found finished
    folder: Path | None = None  # a new run folder at exactly this path (cv folds), not runs_root/<name>/<time>
    eval_split: str | None = None  # default: the recipe's eval.split

    def __post_init__(self) -> None:
        # The public API passes these through from users, who write paths as strings as often as not.
        for name in ("runs_root", "resume", "folder"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))


@dataclass
class _FitData:
    """What every stage's `fit` is given besides the model: training inputs and targets (host arrays, arrays
    on the accelerator, or a stream), validation data, and how batches are split."""

    train: SplitData
    validation: Any
    validation_callbacks: list[Any]  # validation done by a callback instead of by fit (see data_parallel)
    across: bool  # keras.distribution splits each batch over several devices or processes
    steps: int  # training steps per epoch
    eval_batch: int


class StageLoop:
    """`RunSession`'s stages, fit, save and evaluation, kept apart from its set-up (engine.session) so each
    module has one job; the attributes are RunSession's."""

    loaded: LoadedRecipe
    policy: RunPolicy
    extra_callbacks: list[keras.callbacks.Callback]
    draw: Callable[[Any, TrainResult], list[Path]] | None
    importer: Importer
    prepared: Prepared
    model: keras.Model

    def _fit_data(self) -> _FitData:
        """The training and validation data as `fit` takes them, placed and split the way the recipe asks."""
        from dlrun.engine.data_parallel import LocalValidation, splits_batches

        recipe, graph, prepared, quiet = self.loaded.recipe, self.loaded.graph, self.prepared, self.policy.quiet
        outputs, inputs = graph.outputs, list(graph.inputs)
        train = prepared.feed("train", inputs, outputs)  # arrays, or a tf.data pipeline for file data
        # Under train.distribute the strategy places each batch on its devices itself; deterministic mode feeds
        # a seeded tf.data stream (engine.feed) instead of the arrays.
        if (
            not train.streamed
            and recipe.train.distribute is None
            and not recipe.train.deterministic
            and device_data.wants_device_data(recipe.train.data_on_device, train)
        ):
            train = train.placed(device_data.to_device)
            say(f"training arrays kept on {device_data.device_name()}", quiet=quiet)
        validation = (
            prepared.feed("validation", inputs, outputs).validation_data() if "validation" in prepared.splits else None
        )
        eval_batch = recipe.eval.batch_size or recipe.train.batch_size
        across = splits_batches()
        validation_callbacks: list[Any] = []
        if across and validation is not None:  # evaluated in full by a local copy, not sharded (nothing dropped)
            custom = self.importer.custom_objects()
            validation_callbacks.append(LocalValidation.make(prepared, outputs, inputs, eval_batch, custom))
            validation = None
        samples, batch_size = prepared.count("train"), recipe.train.batch_size
        steps = -(-samples // batch_size)
        if across:
            steps = samples // batch_size
            if dropped := samples - steps * batch_size:
                say(
                    f"{steps} full batches of {batch_size} per epoch (split over devices): the last "
                    f"{dropped} of the {samples} training samples in each epoch's order are left out",
                    quiet=quiet,
                )
        return _FitData(train, validation, validation_callbacks, across, steps, eval_batch)

    def _run_callbacks(self, run: RunDir) -> list[Any]:
        """The recipe's callbacks for every stage, plus TensorBoard (unless the recipe has its own) and tracking."""
        from dlrun.engine.callbacks import make_callbacks
        from dlrun.engine.tracking import tracking_callbacks

        train = self.loaded.recipe.train
        callbacks = make_callbacks(train.callbacks, run, self.importer, ("train", "callbacks"))
        if (
            train.tensorboard
            and all(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorflow"))
            and not any(c.type == "TensorBoard" for c in train.callbacks)
        ):
            # Scalars only: writing the graph and the model's config on every stage's fit cost ~1.3 s CPU of a
            # two-stage MobileNetV2 run (issue 21); a recipe's own TensorBoard callback has Keras' defaults.
            from dlrun.engine.tensorboard_log import TensorBoardScalars

            callbacks.append(TensorBoardScalars(run.tensorboard))
        return callbacks + tracking_callbacks(self.loaded, run)  # MLflow, when train.mlflow is set

    def _fit_stages(self, run: RunDir, state: ResumeState, *, resuming: bool) -> TrainResult:
        """Fit every stage in turn (skipping those a resumed run finished), then save and evaluate the model."""
        from dlrun.engine.callbacks import (
            HistoryWriter,
            NonFiniteGuard,
            TorchEpochSeed,
            make_callbacks,
            stop_on_signals,
        )
        from dlrun.engine.checkpoints import step_checkpoints
        from dlrun.engine.data_parallel import unknown_length_expected
        from dlrun.engine.progress import TrainProgress

        recipe, graph, model, quiet = self.loaded.recipe, self.loaded.graph, self.model, self.policy.quiet
        data = self._fit_data()
        base_callbacks = self._run_callbacks(run)
        history: dict[str, list[float]] = state.history() if resuming else {}
        start = state.epoch() if resuming else 0
        stages = recipe.train.stages or [StageSpec(epochs=recipe.train.epochs)]
        total = sum(s.epochs for s in stages)
        epoch = 0
        all_callbacks = list(base_callbacks)
        guard = NonFiniteGuard()
        quiet_shards = unknown_length_expected() if data.across else nullcontext()
        reseed = TorchEpochSeed.needed(recipe.seed, deterministic=recipe.train.deterministic)
        meter = display.EpochMeter(total, data.steps, recipe.train.batch_size, quiet=quiet)
        with stop_on_signals(model) as signals, quiet_shards:

            def interrupted() -> bool:
                # Keras ends an epoch cut short by SIGINT/SIGTERM with on_epoch_end too: that epoch is not complete.
                return signals["signum"] is not None

            stepwise = step_checkpoints(
                recipe, state, history, interrupted, arrays=not data.train.streamed, split=data.across, steps=data.steps,
                resume_epoch=start, resume_step=state.step() if resuming else 0,
            )  # fmt: skip

            for i, stage in enumerate(stages):
                where = ("train", "stages", i)
                apply_trainable(model, graph, stage.trainable, (*where, "trainable"))
                if epoch + stage.epochs <= start:
                    epoch += stage.epochs  # finished before the interruption
                    continue
                compile_model(
                    model,
                    recipe.compile,
                    graph.outputs,
                    self.importer,
                    optimizer=stage.optimizer,
                    loss_weights=stage.loss_weights,
                    deterministic=recipe.train.deterministic,
                    batch_size=recipe.train.batch_size,
                    training_steps=-(-self.prepared.count("train") // recipe.train.batch_size) * stage.epochs,
                )
                first = max(epoch, start)
                if resuming and first == start:
                    state.restore(model)
                stage_callbacks = make_callbacks(stage.callbacks or [], run, self.importer, (*where, "callbacks"))
                all_callbacks += stage_callbacks
                if len(stages) > 1:
                    display.stage_header(
                        f"stage {i + 1}/{len(stages)}{f' ({stage.name})' if stage.name else ''}: "
                        f"{model.count_params() - non_trainable(model):,} trainable parameters",
                        quiet=quiet,
                    )
                callbacks = [
                    *data.validation_callbacks,
                    *reseed,
                    guard,
                    *base_callbacks,
                    *stage_callbacks,
                    *self.extra_callbacks,
                    HistoryWriter(run, history, interrupted),
                    state.callback(history, interrupted),
                    *stepwise,
                    TrainProgress(meter, interrupted),
                ]
                # A state saved mid-epoch: that epoch's remaining batches first (engine.checkpoints), then the rest.
                skip = state.step() if resuming and first == start else 0
                ran = self._fit_epochs(data, callbacks, first, first + 1, skip) if skip else 0
                if not skip or (first + ran < epoch + stage.epochs and not interrupted() and guard.failure is None):
                    ran += self._fit_epochs(data, callbacks, first + ran, epoch + stage.epochs)
                epoch = first + ran
                if guard.failure is not None:
                    raise RecipeError(
                        f"{guard.failure}; training stopped. The last good state (epoch {state.epoch()}) is kept "
                        f"in {state.folder}; lower the learning rate or check the data for extreme values"
                    )
                if signals["signum"] is not None:
                    break
        if signals["signum"] is not None:
            raise RunInterrupted(int(signals["signum"]))
        return self._save_and_evaluate(run, data, all_callbacks, history)

    def _fit_epochs(self, data: _FitData, callbacks: list[Any], begin: int, end: int, skip: int = 0) -> int:
        """`model.fit` over epochs begin..end-1, the first `skip` batches of the first left out (a resumed cut
        epoch); returns how many epochs ran."""
        from dlrun.engine.checkpoints import partial_feed
        from dlrun.engine.feed import train_feed

        train = self.loaded.recipe.train
        feed = train_feed(
            data.train,
            batch_size=train.batch_size,
            seed=self.loaded.recipe.seed,
            shuffle=train.shuffle,
            start_epoch=begin,
            end_epoch=end,
            deterministic=train.deterministic,
        )
        if skip:
            feed = partial_feed(feed, skip, data.steps, self.model)
        try:
            hist = self.model.fit(
                feed.x,
                feed.y,
                batch_size=feed.batch_size,
                steps_per_epoch=feed.steps_per_epoch,
                epochs=end,
                initial_epoch=begin,
                validation_data=data.validation,
                validation_batch_size=data.eval_batch,
                shuffle=feed.shuffle,
                callbacks=callbacks,
                verbose=0,
            )
        except Exception as exc:
            _raise_if_out_of_memory(exc, train.batch_size)
            raise
        return len(hist.epoch)

    def _save_and_evaluate(
        self, run: RunDir, data: _FitData, callbacks: list[Any], history: dict[str, list[float]]
    ) -> TrainResult:
        """Restore the best checkpoint (when asked), save model.keras, evaluate on the eval split."""
        from dlrun.engine.artifacts import evaluate_and_predict, evaluate_model
        from dlrun.engine.callbacks import restore_best
        from dlrun.engine.data_parallel import predicts_alone
        from dlrun.engine.tracking import finish_tracking

        recipe, model, prepared = self.loaded.recipe, self.model, self.prepared
        outputs, inputs = self.loaded.graph.outputs, list(self.loaded.graph.inputs)
        display.status("saving and evaluating the model", quiet=self.policy.quiet)
        restored = restore_best(model, callbacks, self.importer) if recipe.train.restore_best else None
        if restored:
            say(f"restored best weights from {Path(restored).name}", quiet=self.policy.quiet)
        with atomic_target(run.model, ".keras") as tmp:
            model.save(str(tmp))
        record_run(run.path, recipe.imports)  # integrity.json: later verbs refuse a changed model or module
        metrics: dict[str, float] = {}
        evaluation = None
        eval_split = self.policy.eval_split or recipe.eval.split
        if eval_split in prepared.splits:
            if data.across:  # the saved model, loaded on this process alone: exact, nothing dropped (data_parallel)
                from dlrun.engine.data_parallel import evaluate_local, local_copy

                local = local_copy(model, self.importer.custom_objects(), run.model)
                metrics = evaluate_local(local, prepared, eval_split, outputs, inputs, data.eval_batch)
            elif self.draw is not None and is_chief() and predicts_alone(recipe):  # pictures reuse predictions
                custom = self.importer.custom_objects()
                evaluation = evaluate_and_predict(model, prepared, eval_split, outputs, inputs, data.eval_batch, custom)
                metrics = evaluation.metrics
            else:
                metrics = evaluate_model(model, prepared, eval_split, outputs, inputs, data.eval_batch)
            run.write_json("eval.json", {"split": eval_split, "outputs": outputs, "metrics": metrics})
        result = TrainResult(run=run, history=history, metrics=metrics, model=model, evaluation=evaluation)
        if self.draw is not None and is_chief():
            result.plots = self.draw(self, result)
        epochs = len(next(iter(history.values()), []))
        notes = finish_tracking(self.loaded, run, model, metrics, split=eval_split, step=epochs)  # MLflow, TensorBoard
        for note in notes:
            say(note, quiet=self.policy.quiet)
        return result


def _raise_if_out_of_memory(exc: Exception, batch_size: int) -> None:
    name = type(exc).__name__
    text = str(exc)
    if name == "ResourceExhaustedError" or "out of memory" in text.lower() or isinstance(exc, MemoryError):
        raise RecipeError(
            f"out of memory while training with batch_size {batch_size}; lower train.batch_size "
            "(e.g. --set train.batch_size=" + str(max(1, batch_size // 2)) + ") or use a smaller model/input"
        ) from None
