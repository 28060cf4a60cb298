"""compile -> callbacks -> fit (one stage or several) -> restore best -> save -> evaluate.

The seeds' pipeline, declared: everything here is driven by the recipe; the run folder receives the
resolved recipe, environment, history, checkpoints, TensorBoard logs, the model and its evaluation.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.backend import is_chief, strategy_scope
from dlrun.components import Importer, make
from dlrun.console import make_progress_callback, say
from dlrun.errors import RecipeError, RunInterrupted
from dlrun.recipe.compose import LoadedRecipe, dump_yaml
from dlrun.recipe.schema import CompileSpec, Component, StageSpec
from dlrun.train import device_data
from dlrun.train.feed import train_feed
from dlrun.train.rundir import (
    RunDir,
    atomic_target,
    atomic_write_bytes,
    atomic_write_text,
    environment,
)
from dlrun.train.tracking import tracking_callbacks
from dlrun.trust import check_network, record_run

# Steps per compiled call when the recipe says "auto": the per-call Python overhead dominates small models
# on CPU (about 2x on the seeds' MLP); results are the same steps in the same order.
AUTO_STEPS_PER_EXECUTION = 32


@dataclass
class TrainResult:
    """What a training run produced."""

    run: RunDir
    history: dict[str, list[float]]
    metrics: dict[str, float]
    model: Any


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; optionally make TensorFlow's or torch's ops deterministic."""
    import keras

    from dlrun.backend import quiet_native_startup

    with quiet_native_startup():  # under jax and torch, this is where TensorFlow (if installed) loads
        keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if deterministic and keras.backend.backend() == "torch":
        import os

        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' deterministic mode asks for it
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def per_output(value: Any, outputs: list[str], factory: Any) -> dict[str, Any]:
    """Expand a value given for all outputs into one fresh object per output."""
    return {out: factory(value) for out in outputs}


def _auto_steps(deterministic: bool = False) -> int:
    """32 steps per call, except under a tf.distribute strategy (Keras' multi-step loop fails there), in
    deterministic mode, whose per-epoch stream must not be read in chunks that straddle epochs, and under
    torch, whose Keras trainer runs one step per call only."""
    import keras

    if deterministic or keras.backend.backend() == "torch":
        return 1

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            return 1
    return AUTO_STEPS_PER_EXECUTION


def compile_model(
    model: Any,
    spec: CompileSpec,
    outputs: list[str],
    importer: Importer,
    *,
    optimizer: Component | None = None,
    loss_weights: dict[str, float] | None = None,
    deterministic: bool = False,
) -> None:
    """`model.compile` from the recipe's compile section (optionally a stage's optimizer/weights)."""
    opt = make("optimizers", optimizer or spec.optimizer, importer, ("compile", "optimizer"))
    if isinstance(spec.loss, dict):
        loss: Any = {o: make("losses", spec.loss[o], importer, ("compile", "loss", o)) for o in outputs}
    elif len(outputs) > 1:
        loss = per_output(spec.loss, outputs, lambda c: make("losses", c, importer, ("compile", "loss")))
    else:
        loss = make("losses", spec.loss, importer, ("compile", "loss"))
    if isinstance(spec.metrics, dict):
        metrics: Any = {
            o: [make("metrics", c, importer, ("compile", "metrics", o)) for c in spec.metrics.get(o, [])]
            for o in outputs
        }
    elif len(outputs) > 1:
        metrics = per_output(
            spec.metrics, outputs, lambda cs: [make("metrics", c, importer, ("compile", "metrics")) for c in cs]
        )
    else:
        metrics = [make("metrics", c, importer, ("compile", "metrics")) for c in spec.metrics]
    weights = loss_weights if loss_weights is not None else spec.loss_weights
    if weights is not None:
        weights = {o: float(weights.get(o, 1.0)) for o in outputs}
    steps_per_execution = _steps_per_execution(spec.steps_per_execution, deterministic)
    model.compile(
        optimizer=opt,
        loss=loss,
        loss_weights=weights,
        metrics=metrics,
        jit_compile=spec.jit_compile,
        steps_per_execution=steps_per_execution,
    )


def _steps_per_execution(value: int | str, deterministic: bool) -> int:
    """The recipe's steps per call ('auto' resolved per backend); torch refuses more than one."""
    import keras

    if value == "auto":
        return _auto_steps(deterministic)
    if int(value) > 1 and keras.backend.backend() == "torch":
        raise RecipeError(
            f"steps_per_execution {value} needs the tensorflow or jax backend (Keras' torch trainer runs one "
            "step per call); use 'auto' or 1",
            path=("compile", "steps_per_execution"),
        )
    return int(value)


def _atomic_checkpoint_class() -> Any:
    import keras

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        """ModelCheckpoint that writes to a temporary file and renames: a failed save keeps the old file."""

        def _save_model(self, epoch: int, batch: int | None, logs: dict[str, Any]) -> None:
            filepath = Path(self._get_file_path(epoch, batch, logs))
            if not self._should_save_model(epoch, batch, logs, str(filepath)):
                return
            suffix = ".weights.h5" if str(filepath).endswith(".weights.h5") else filepath.suffix
            try:
                with atomic_target(filepath, suffix) as tmp:
                    if self.save_weights_only:
                        self.model.save_weights(str(tmp), overwrite=True)
                    else:
                        self.model.save(str(tmp), overwrite=True)
            except OSError as exc:
                kept = " the previous checkpoint is intact" if filepath.exists() else ""
                raise RecipeError(
                    f"saving checkpoint {filepath.name} failed ({exc.strerror or exc}): disk full?{kept}"
                ) from None

    return AtomicModelCheckpoint


def make_callbacks(comps: list[Component], run: RunDir, importer: Importer, base: tuple[str | int, ...]) -> list[Any]:
    """Instantiate callbacks, placing their files inside the run folder."""
    out = []
    for i, comp in enumerate(comps):
        kwargs = comp.kwargs
        path = (*base, i)
        check_network(comp.type, importer.trust, path)  # RemoteMonitor needs --trust
        if comp.type == "ModelCheckpoint":
            best_only = bool(kwargs.get("save_best_only", False))
            default = "best.weights.h5" if best_only else "epoch-{epoch:03d}.weights.h5"
            file = Path(kwargs.get("filepath", default))
            kwargs = {
                **kwargs,
                "filepath": str(file if file.is_absolute() else run.checkpoints / file),
                "save_weights_only": kwargs.get("save_weights_only", str(file).endswith(".weights.h5")),
            }
            try:
                out.append(_atomic_checkpoint_class()(**kwargs))
            except (TypeError, ValueError) as exc:
                raise RecipeError(f"ModelCheckpoint: {exc}", path=path) from None
            continue
        defaults = {
            "TensorBoard": ("log_dir", run.tensorboard),
            "CSVLogger": ("filename", run.path / "history_log.csv"),
            "BackupAndRestore": ("backup_dir", run.path / "backup"),
        }
        if comp.type in defaults:
            key, where = defaults[comp.type]
            value = Path(kwargs.get(key, where))
            kwargs = {**kwargs, key: str(value if value.is_absolute() else run.path / value)}
        out.append(make("callbacks", Component(type=comp.type, **kwargs), importer, path))
    return out


def _restore_best(model: Any, callbacks: list[Any], importer: Importer) -> str | None:
    """Load the best checkpoint's weights (the seeds' load-best-weights step); returns its path."""
    import keras

    for cb in callbacks:
        if isinstance(cb, keras.callbacks.ModelCheckpoint) and cb.save_best_only:
            file = Path(cb.filepath)
            if "{" in cb.filepath or not file.is_file():
                continue
            if cb.save_weights_only:
                model.load_weights(str(file))
            else:
                best = keras.saving.load_model(str(file), custom_objects=importer.custom_objects())
                model.set_weights(best.get_weights())
            return str(file)
    return None


def apply_trainable(model: Any, graph: Any, selection: dict[str, list[str] | str] | None, where: tuple) -> None:
    """Freeze/unfreeze layers by node name, block name, glob pattern or 'all'."""
    if not selection:
        return
    unknown = set(selection) - {"freeze", "unfreeze"}
    if unknown:
        raise RecipeError(f"`trainable` takes `freeze` and `unfreeze`, not {sorted(unknown)}", path=where)
    layer_names = [layer.name for layer in model.layers]
    for action in ("freeze", "unfreeze"):
        patterns = selection.get(action, [])
        patterns = [patterns] if isinstance(patterns, str) else patterns
        for pattern in patterns:
            if pattern == "all":
                chosen = layer_names
            else:
                block_members = [
                    n.name for n in graph.nodes if any(b == pattern or b.startswith(f"{pattern}.") for b in n.block)
                ]
                chosen = [n for n in layer_names if fnmatch.fnmatchcase(n, pattern)] + block_members
            if not chosen:
                raise RecipeError(f"{pattern!r} matches no layer, block or pattern", path=(*where, action))
            for name in chosen:
                if name in layer_names:
                    model.get_layer(name).trainable = action == "unfreeze"


@contextmanager
def stop_on_signals(model_box: dict[str, Any]) -> Iterator[dict[str, int | None]]:
    """SIGINT/SIGTERM ask Keras to stop at the next step boundary instead of killing the process."""
    state: dict[str, int | None] = {"signum": None}

    def handler(signum: int, frame: Any) -> None:
        state["signum"] = signum
        model = model_box.get("model")
        if model is not None:
            model.stop_training = True

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stages(loaded: LoadedRecipe) -> list[StageSpec]:
    train = loaded.recipe.train
    return train.stages or [StageSpec(epochs=train.epochs)]


def _fit_inputs(prepared: Any, split: str, outputs: list[str], inputs: list[str]) -> tuple[Any, Any]:
    return prepared.feed(split, inputs, outputs)  # arrays, or a tf.data pipeline (y None) for file data


def _copy_local_code(loaded: LoadedRecipe, run: RunDir) -> None:
    """Copy the recipe's local `.py` imports into the run folder, so the run replays and loads on its own."""
    for entry in loaded.recipe.imports:
        module = entry.split(":")[0]
        if not module.endswith(".py"):
            continue  # an installed package: the environment provides it
        source = (loaded.base_dir / module).resolve()
        target = (run.path / module).resolve()
        if source.is_file() and run.path.resolve() in target.parents:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, source.read_bytes())


def _resolved_document(loaded: LoadedRecipe, data_file: Path | None) -> dict[str, Any]:
    doc = loaded.resolved()
    doc.pop("$schema", None)
    if isinstance(doc.get("data"), dict):
        from dlrun.data.sources import absolute_data_paths

        doc["data"] = absolute_data_paths(doc["data"], loaded.base_dir)
    return doc


def train(
    loaded: LoadedRecipe,
    *,
    runs_root: Path = Path("runs"),
    trust: bool = False,
    quiet: bool = False,
    overrides: tuple[str, ...] = (),
    resume: Path | None = None,
) -> TrainResult:
    """Train the recipe: data, model, compile, fit (stages), restore best, save, evaluate.

    With `resume`, continue the interrupted run in that folder from its last completed epoch.
    """
    from dlrun.data.prepare import prepare
    from dlrun.data.preprocess import attach_preprocessing, resolve_input_shapes
    from dlrun.data.sources import resolve_path
    from dlrun.graph.build import build_graph

    recipe = loaded.recipe
    if not 0 <= recipe.seed < 2**32:  # NumPy's range; until the schema refuses it at validate time
        raise RecipeError(f"seed must be between 0 and 2**32 - 1, got {recipe.seed}", path=("seed",))
    if recipe.data is None:
        raise RecipeError("this recipe has no `data` section; nothing to train on (use `dlrun check`)", path=("data",))
    device_data.check_setting(recipe.train.data_on_device)
    importer = Importer(recipe.imports, loaded.base_dir, trust=trust, origin=resume)  # a run folder: --trust
    data_file = resolve_path(recipe.data, loaded.base_dir)
    prepared = prepare(recipe.data, loaded.base_dir, recipe.seed)
    if prepared.record is not None:
        from dlrun.data.record import describe

        say(describe(prepared.record), quiet=quiet)  # before any TensorFlow work
    seed_everything(recipe.seed, deterministic=recipe.train.deterministic)
    scope = strategy_scope(recipe)
    scope.__enter__()  # build, compile and fit under the distribution strategy (if any)
    try:
        from dlrun.train.data_parallel import check_batch_size, splits_batches

        if splits_batches():  # before any run folder exists
            check_batch_size(recipe.train.batch_size, prepared.count("train"))
        resolve_input_shapes(loaded, prepared, importer)  # `shape: auto` inputs take the prepared data's shape
        model = build_graph(loaded.graph, importer, doc=loaded.doc, base_dir=loaded.base_dir)
        model = attach_preprocessing(model, loaded, prepared, importer)  # raw inputs -> preprocess -> model
        return _train_model(
            loaded,
            model,
            prepared,
            importer,
            data_file,
            runs_root=runs_root,
            quiet=quiet,
            overrides=overrides,
            resume=resume,
        )
    finally:
        scope.__exit__(None, None, None)


def _train_model(
    loaded: LoadedRecipe,
    model: Any,
    prepared: Any,
    importer: Importer,
    data_file: Path | None,
    *,
    runs_root: Path,
    quiet: bool,
    overrides: tuple[str, ...],
    resume: Path | None,
) -> TrainResult:
    args = (loaded, model, prepared, importer, data_file)
    if resume is not None and _several_processes(loaded.recipe):
        raise RecipeError(
            "--resume continues single-process runs only; restart every process of a multi-worker run from "
            "the beginning"
        )
    if is_chief():
        return _train_in_run_folder(*args, runs_root=runs_root, quiet=quiet, overrides=overrides, resume=resume)
    # Other workers train in step with the chief (collectives need every process) in a scratch folder that
    # is removed once training succeeds; only the chief keeps a run folder.
    scratch = Path(tempfile.mkdtemp(prefix="dlrun-worker-"))
    result = _train_in_run_folder(*args, runs_root=scratch, quiet=quiet, overrides=overrides, resume=None)
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _several_processes(recipe: Any) -> bool:
    from dlrun.multi_worker import cluster_size

    distribute = recipe.train.distribute
    processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") or 1)
    return processes > 1 or (distribute is not None and distribute.strategy == "multi_worker" and cluster_size() > 1)


def _train_in_run_folder(
    loaded: LoadedRecipe,
    model: Any,
    prepared: Any,
    importer: Importer,
    data_file: Path | None,
    *,
    runs_root: Path,
    quiet: bool,
    overrides: tuple[str, ...],
    resume: Path | None,
) -> TrainResult:
    recipe = loaded.recipe
    state = ResumeState(RunDir.open(resume)) if resume is not None else None
    if state is not None:
        run = state.run
        if not state.exists():
            raise RecipeError(f"{resume} has no resumable state (it stopped before its first epoch ended)")
    else:
        run = RunDir.create(runs_root, recipe.name)
        state = ResumeState(run)
        atomic_write_text(run.recipe, dump_yaml(_resolved_document(loaded, data_file)))
        _copy_local_code(loaded, run)
        run.write_json(
            "run.json",
            {"source": loaded.source, "overrides": list(overrides), "seed": recipe.seed, "environment": environment()},
        )
        if prepared.record is not None:  # data.json + splits.npz: fingerprints, counts, the rows of every split
            from dlrun.data.record import save as save_data_record

            save_data_record(run.path, prepared.record, atomic_write_bytes, run.write_json)
        from dlrun.predict import save_fitted

        save_fitted(run, loaded, prepared)  # classes.json (+ preprocessing.npz): what `dlrun predict` needs
    say(f"run folder: {run.path}" + (f" (resuming after epoch {state.epoch()})" if resume else ""), quiet=quiet)
    try:
        return _fit_stages(loaded, model, prepared, run, state, importer, quiet=quiet, resuming=resume is not None)
    except RecipeError as exc:
        if not state.exists():  # failed before its first epoch: `dlrun runs` lists it failed, with the reason
            atomic_write_text(run.path / "error.log", f"error: {exc}\n")
        raise
    except RunInterrupted:
        raise
    except Exception as exc:
        log = run.path / "error.log"
        atomic_write_text(log, traceback.format_exc())
        exc.dlrun_log = log  # type: ignore[attr-defined]
        raise


@dataclass
class _FitData:
    """What every stage's `fit` is given besides the model: training inputs and targets (host arrays, arrays
    on the accelerator, or a stream), validation data, and how batches are split."""

    x: Any
    y: Any
    validation: Any
    validation_callbacks: list[Any]  # validation done by a callback instead of by fit (see data_parallel)
    across: bool  # keras.distribution splits each batch over several devices or processes
    steps: int  # training steps per epoch
    eval_batch: int


def _fit_data(loaded: LoadedRecipe, prepared: Any, importer: Importer, *, quiet: bool) -> _FitData:
    """The training and validation data as `fit` takes them, placed and split the way the recipe asks."""
    from dlrun.train.data_parallel import LocalValidation, splits_batches

    recipe, graph = loaded.recipe, loaded.graph
    outputs, inputs = graph.outputs, list(graph.inputs)
    x, y = _fit_inputs(prepared, "train", outputs, inputs)
    # Under train.distribute the strategy places each batch on its devices itself; deterministic mode feeds
    # a seeded tf.data stream (train.feed) instead of the arrays.
    if (
        y is not None
        and recipe.train.distribute is None
        and not recipe.train.deterministic
        and device_data.wants_device_data(recipe.train.data_on_device, x, y)
    ):
        x, y = device_data.to_device(x), device_data.to_device(y)
        say(f"training arrays kept on {device_data.device_name()}", quiet=quiet)
    validation = _fit_inputs(prepared, "validation", outputs, inputs) if "validation" in prepared.splits else None
    if validation is not None and validation[1] is None:
        validation = validation[0]  # a dataset yielding (inputs, targets)
    eval_batch = recipe.eval.batch_size or recipe.train.batch_size
    across = splits_batches()
    validation_callbacks: list[Any] = []
    if across and validation is not None:  # evaluated in full by a local copy, not sharded (nothing dropped)
        validation_callbacks.append(
            LocalValidation.make(prepared, outputs, inputs, eval_batch, importer.custom_objects())
        )
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
    return _FitData(x, y, validation, validation_callbacks, across, steps, eval_batch)


def _run_callbacks(loaded: LoadedRecipe, run: RunDir, importer: Importer) -> list[Any]:
    """The recipe's callbacks for every stage, plus TensorBoard (unless the recipe has its own) and tracking."""
    recipe = loaded.recipe
    callbacks = make_callbacks(recipe.train.callbacks, run, importer, ("train", "callbacks"))
    if (
        recipe.train.tensorboard
        and importlib.util.find_spec("tensorboard") is not None
        and not any(c.type == "TensorBoard" for c in recipe.train.callbacks)
    ):
        callbacks += make_callbacks([Component(type="TensorBoard")], run, importer, ("train", "tensorboard"))
    return callbacks + tracking_callbacks(loaded, run)  # MLflow, when train.mlflow is set


def _fit_stages(
    loaded: LoadedRecipe,
    model: Any,
    prepared: Any,
    run: RunDir,
    state: ResumeState,
    importer: Importer,
    *,
    quiet: bool,
    resuming: bool,
) -> TrainResult:
    """Fit every stage in turn (skipping those a resumed run finished), then save and evaluate the model."""
    from dlrun.train.data_parallel import unknown_length_expected

    recipe, graph = loaded.recipe, loaded.graph
    outputs = graph.outputs
    data = _fit_data(loaded, prepared, importer, quiet=quiet)
    base_callbacks = _run_callbacks(loaded, run, importer)
    history: dict[str, list[float]] = state.history() if resuming else {}
    start = state.epoch() if resuming else 0
    stages = _stages(loaded)
    total = sum(s.epochs for s in stages)
    epoch = 0
    box: dict[str, Any] = {"model": model}
    all_callbacks = list(base_callbacks)
    guard = NonFiniteGuard.make()
    quiet_shards = unknown_length_expected() if data.across else nullcontext()
    reseed = TorchEpochSeed.callbacks(recipe.seed, deterministic=recipe.train.deterministic)
    with stop_on_signals(box) as signals, quiet_shards:

        def interrupted() -> bool:
            # Keras ends an epoch cut short by SIGINT/SIGTERM with on_epoch_end too: that epoch is not complete.
            return signals["signum"] is not None

        for i, stage in enumerate(stages):
            where = ("train", "stages", i)
            apply_trainable(model, graph, stage.trainable, (*where, "trainable"))
            if epoch + stage.epochs <= start:
                epoch += stage.epochs  # finished before the interruption
                continue
            compile_model(
                model,
                recipe.compile,
                outputs,
                importer,
                optimizer=stage.optimizer,
                loss_weights=stage.loss_weights,
                deterministic=recipe.train.deterministic,
            )
            first = max(epoch, start)
            if resuming and first == start:
                state.restore(model)
            stage_callbacks = make_callbacks(stage.callbacks or [], run, importer, (*where, "callbacks"))
            all_callbacks += stage_callbacks
            if len(stages) > 1:
                say(
                    f"stage {i + 1}/{len(stages)}{f' ({stage.name})' if stage.name else ''}: "
                    f"{model.count_params() - _non_trainable(model):,} trainable parameters",
                    quiet=quiet,
                )
            feed = train_feed(
                data.x,
                data.y,
                batch_size=recipe.train.batch_size,
                seed=recipe.seed,
                shuffle=recipe.train.shuffle,
                start_epoch=first,
                end_epoch=epoch + stage.epochs,
                deterministic=recipe.train.deterministic,
            )
            try:
                hist = model.fit(
                    feed.x,
                    feed.y,
                    batch_size=feed.batch_size,
                    steps_per_epoch=feed.steps_per_epoch,
                    epochs=epoch + stage.epochs,
                    initial_epoch=first,
                    validation_data=data.validation,
                    validation_batch_size=data.eval_batch,
                    shuffle=feed.shuffle,
                    callbacks=[
                        *data.validation_callbacks,
                        *reseed,
                        guard,
                        *base_callbacks,
                        *stage_callbacks,
                        _HistoryWriter.make(run, history, interrupted),
                        state.callback(history, interrupted),
                        make_progress_callback(total, data.steps, quiet=quiet),
                    ],
                    verbose=0,
                )
            except Exception as exc:
                _raise_if_out_of_memory(exc, recipe.train.batch_size)
                raise
            epoch = first + len(hist.epoch)
            if guard.failure is not None:
                raise RecipeError(
                    f"{guard.failure}; training stopped. The last good state (epoch {state.epoch()}) is kept in "
                    f"{state.folder}; lower the learning rate or check the data for extreme values"
                )
            if signals["signum"] is not None:
                break
    if signals["signum"] is not None:
        raise RunInterrupted(int(signals["signum"]))
    return _save_and_evaluate(loaded, model, prepared, run, importer, data, all_callbacks, history, quiet=quiet)


def _save_and_evaluate(
    loaded: LoadedRecipe,
    model: Any,
    prepared: Any,
    run: RunDir,
    importer: Importer,
    data: _FitData,
    callbacks: list[Any],
    history: dict[str, list[float]],
    *,
    quiet: bool,
) -> TrainResult:
    """Restore the best checkpoint (when asked), save model.keras, evaluate on the recipe's eval split."""
    recipe = loaded.recipe
    outputs, inputs = loaded.graph.outputs, list(loaded.graph.inputs)
    restored = _restore_best(model, callbacks, importer) if recipe.train.restore_best else None
    if restored:
        say(f"restored best weights from {Path(restored).name}", quiet=quiet)
    with atomic_target(run.model, ".keras") as tmp:
        model.save(str(tmp))
    record_run(run.path, recipe.imports)  # integrity.json: later verbs refuse a changed model or module
    metrics: dict[str, float] = {}
    eval_split = recipe.eval.split
    if eval_split in prepared.splits:
        from dlrun.evaluate import evaluate_model

        if data.across:  # the saved model, loaded on this process alone: exact, nothing dropped (see data_parallel)
            from dlrun.train.data_parallel import evaluate_local, local_copy

            local = local_copy(model, importer.custom_objects(), run.model)
            metrics = evaluate_local(local, prepared, eval_split, outputs, inputs, data.eval_batch)
        else:
            metrics = evaluate_model(model, prepared, eval_split, outputs, inputs, data.eval_batch)
        run.write_json("eval.json", {"split": eval_split, "outputs": outputs, "metrics": metrics})
    return TrainResult(run=run, history=history, metrics=metrics, model=model)


def _raise_if_out_of_memory(exc: Exception, batch_size: int) -> None:
    name = type(exc).__name__
    text = str(exc)
    if name == "ResourceExhaustedError" or "out of memory" in text.lower() or isinstance(exc, MemoryError):
        raise RecipeError(
            f"out of memory while training with batch_size {batch_size}; lower train.batch_size "
            "(e.g. --set train.batch_size=" + str(max(1, batch_size // 2)) + ") or use a smaller model/input"
        ) from None


class TorchEpochSeed:
    """Deterministic mode under torch: reseeds torch's global generator before each epoch's first step from
    (seed, epoch). Keras' torch Dropout without a `seed` draws from that generator (not from a SeedGenerator
    variable, as under tensorflow and jax) and so does torch's DataLoader when fit starts, so without this a
    run resumed at epoch k would draw other dropout masks than the uninterrupted run did."""

    @staticmethod
    def callbacks(seed: int, *, deterministic: bool) -> list[Any]:
        """The reseeding callback in deterministic mode under torch; none otherwise."""
        import keras

        if not deterministic or keras.backend.backend() != "torch":
            return []
        import numpy as np
        import torch

        class Reseed(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.epoch: int | None = epoch

            def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
                if self.epoch is not None:  # after fit's own draws (the data loader starts on the first step)
                    torch.manual_seed(int(np.random.SeedSequence([seed, self.epoch]).generate_state(1)[0]))
                    self.epoch = None

        return [Reseed()]


class NonFiniteGuard:
    """Stops training at the first batch whose loss is NaN or infinite, remembering where."""

    @staticmethod
    def make() -> Any:
        import keras

        class Guard(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.failure: str | None = None
                self.epoch = 0

            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.epoch = epoch

            def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    self.failure = f"the loss became {float(loss)} in epoch {self.epoch + 1}, batch {batch + 1}"
                    self.model.stop_training = True

        return Guard()


class ResumeState:
    """The run's resumable state: every model and optimizer variable after the last completed epoch."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.folder = run.path / "resume"

    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def _meta(self) -> dict[str, Any]:
        return json.loads((self.folder / "state.json").read_text(encoding="utf-8"))

    def epoch(self) -> int:
        """Number of completed epochs saved (0 when none)."""
        return int(self._meta()["epoch"]) if self.exists() else 0

    def history(self) -> dict[str, list[float]]:
        return self._meta()["history"] if self.exists() else {}

    def save(self, model: Any, epoch: int, history: dict[str, list[float]]) -> None:
        import numpy as np

        arrays = {f"model_{i}": np.asarray(v) for i, v in enumerate(model.variables)}
        if model.optimizer is not None and model.optimizer.built:
            arrays.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.folder / "state.npz", buffer.getvalue())
        # state.json last: it is what marks the state complete.
        atomic_write_text(self.folder / "state.json", json.dumps({"epoch": epoch, "history": history}) + "\n")

    def restore(self, model: Any) -> None:
        import numpy as np

        with np.load(self.folder / "state.npz") as archive:
            for i, v in enumerate(model.variables):
                v.assign(archive[f"model_{i}"])
            if any(k.startswith("optimizer_") for k in archive.files):
                model.optimizer.build(model.trainable_variables)
                for i, v in enumerate(model.optimizer.variables):
                    v.assign(archive[f"optimizer_{i}"])

    def callback(self, history: dict[str, list[float]], interrupted: Any = lambda: False) -> Any:
        import keras

        owner = self

        class SaveResumeState(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if interrupted():
                    return  # a partial epoch: the state stays at the last complete one
                if self.model.stop_training and any(
                    isinstance(v, float) and not math.isfinite(v) for v in (logs or {}).values()
                ):
                    return  # never overwrite the last good state with a diverged one
                owner.save(self.model, epoch + 1, history)

        return SaveResumeState()


def _non_trainable(model: Any) -> int:
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.non_trainable_weights))


class _HistoryWriter:
    """Per-epoch metrics to history.csv and history.json, atomically, across all stages."""

    @staticmethod
    def make(run: RunDir, history: dict[str, list[float]], interrupted: Any = lambda: False) -> Any:
        import keras

        class HistoryWriter(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if interrupted():
                    return  # a partial epoch is not history
                logs = dict(logs or {})
                history.setdefault("epoch", []).append(epoch + 1)
                history.setdefault("seconds", []).append(round(time.perf_counter() - self.started, 4))
                for key, value in logs.items():
                    history.setdefault(key, []).append(float(value))
                keys = list(history)
                rows = [",".join(keys)]
                for i in range(len(history["epoch"])):
                    rows.append(",".join(_cell(history[k], i) for k in keys))
                atomic_write_text(run.path / "history.csv", "\n".join(rows) + "\n")
                run.write_json("history.json", history)

        return HistoryWriter()


def _cell(values: list[float], i: int) -> str:
    return repr(values[i]) if i < len(values) else ""
