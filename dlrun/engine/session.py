"""One training run, start to end: the engine that `train`, `cv` (a session per fold), `tune` (a session per
trial) and `ensemble` (a session per member) all run.

    RunSession(loaded, RunPolicy(...), extra_callbacks=[...]).run()

backend activation and error location -> data -> model -> run folder (new, resumed, or found finished; the
chief's decision shared with every process) -> engine.stages: stages (compile, callbacks, fit) -> restore
best -> save -> evaluate. The run folder receives the resolved recipe, environment, history, checkpoints,
TensorBoard logs, the model, what each output is (`outputs.json`) and the evaluation.
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.backend import activate, is_chief, strategy_scope, wanted_backend
from dlrun.cluster import check_one_run
from dlrun.console import say
from dlrun.data.prepare import Prepared
from dlrun.engine import device_data, display
from dlrun.engine.compile import seed_everything
from dlrun.engine.liveness import mark_live
from dlrun.engine.rundir import RunDir, atomic_write_text
from dlrun.engine.stages import RunPolicy, StageLoop, TrainResult
from dlrun.errors import RecipeError, RunInterrupted
from dlrun.importer import Importer
from dlrun.recipe.compose import LoadedRecipe
from dlrun.recipe.schema import Recipe

if TYPE_CHECKING:
    import keras


@dataclass
class RunSession(StageLoop):
    """A recipe trained once. `extra_callbacks` join every stage's callbacks (tune's trial reporter)."""

    loaded: LoadedRecipe
    policy: RunPolicy = field(default_factory=RunPolicy)
    extra_callbacks: list[keras.callbacks.Callback] = field(default_factory=list)
    # The verb's pictures of the run (verbs.train: learning curves, confusion matrices), drawn once the model is
    # saved and evaluated and before tracking finishes, so MLflow gets them with the rest of the run folder.
    draw: Callable[[RunSession, TrainResult], list[Path]] | None = None

    def run(self, prepared: Prepared | None = None) -> TrainResult:
        """Train and evaluate; `prepared` replaces the recipe's own data (a cv fold)."""
        recipe = self.loaded.recipe
        with self.loaded.locating_errors():
            if (finished := self._settle_run_id()) is not None:
                return finished
            distribute = recipe.train.distribute
            check_one_run(distribute.strategy if distribute else None)  # N launched processes, N lone runs: refused
            if distribute is not None and distribute.strategy == "multi_worker":
                from dlrun.multi_worker import check_tf_config

                check_tf_config()  # before the slow Keras import: a bad cluster description fails at once
            display.loading(wanted_backend(recipe), quiet=self.policy.quiet)
            try:
                activate(recipe)
                return self._run(prepared)
            finally:
                display.stop()

    def _settle_run_id(self) -> TrainResult | None:
        """Turn `--resume auto` into a run id (engine.resume); the earlier result when that run has finished."""
        from dlrun.engine.resume import AUTO, finished_run, settle_run_id

        policy = self.policy
        self.named_run = policy.run_id is not None or policy.resume == AUTO  # alike on every process
        run_id = settle_run_id(policy.runs_root, self.loaded, policy.run_id, policy.resume)
        if policy.resume == AUTO:
            say(f"--resume auto: {f'continuing run {run_id}' if run_id else 'no resumable run; a new one'}",
                quiet=policy.quiet)  # fmt: skip
        self.policy = policy = replace(policy, run_id=run_id, resume=None if policy.resume == AUTO else policy.resume)
        run = finished_run(policy.runs_root, self.loaded, run_id)
        if run is None or _several_processes(self.loaded.recipe):  # the chief decides for all (chief_state)
            return None
        say(f"run {run_id} has already finished ({run.path}); nothing to train", quiet=policy.quiet)
        metrics = (run.read_json("eval.json") or {}).get("metrics", {})
        return TrainResult(run=run, history=run.read_json("history.json") or {}, metrics=metrics, model=None)

    def _run(self, prepared: Prepared | None) -> TrainResult:
        from dlrun.data.prepare import prepare
        from dlrun.data.preprocess import attach_preprocessing, resolve_input_shapes
        from dlrun.engine.data_parallel import check_batch_size, splits_batches
        from dlrun.graph.build import build_graph

        loaded, recipe = self.loaded, self.loaded.recipe
        if recipe.data is None:
            raise RecipeError(
                "this recipe has no `data` section; nothing to train on (use `dlrun check`)", path=("data",)
            )
        device_data.check_setting(recipe.train.data_on_device)
        # A run folder's own recipe (--resume) imports code only with --trust.
        self.importer = Importer(recipe.imports, loaded.base_dir, trust=self.policy.trust, origin=self.policy.resume)
        if prepared is None:
            display.status(display.reading(recipe.data, loaded.base_dir), quiet=self.policy.quiet)
        self.prepared = prepared or prepare(recipe.data, loaded.base_dir, recipe.seed)
        if prepared is None and self.prepared.record is not None:
            from dlrun.data.record import describe

            say(describe(self.prepared.record), quiet=self.policy.quiet)  # before any TensorFlow work
        seed_everything(recipe.seed, deterministic=recipe.train.deterministic)
        scope = strategy_scope(recipe)
        scope.__enter__()  # build, compile and fit under the distribution strategy (if any)
        try:
            if splits_batches():  # before any run folder exists
                check_batch_size(recipe.train.batch_size, self.prepared.count("train"))
            display.status("building the model", quiet=self.policy.quiet)
            resolve_input_shapes(loaded, self.prepared, self.importer)  # `shape: auto` takes the prepared data's
            model = build_graph(loaded.graph, self.importer, doc=loaded.doc, base_dir=loaded.base_dir)
            self.model = attach_preprocessing(model, loaded, self.prepared, self.importer)  # raw -> preprocess -> model
            if recipe.train.distribute is not None and recipe.train.distribute.strategy == "model_parallel":
                from dlrun.model_parallel import check_layout_used

                check_layout_used(self.model, recipe.train.distribute)
            return self._in_run_folder()
        finally:
            scope.__exit__(None, None, None)

    def _in_run_folder(self) -> TrainResult:
        policy = self.policy
        several = _several_processes(self.loaded.recipe)
        if policy.resume is not None and several:
            raise RecipeError(
                "--resume RUN_DIR continues single-process runs only; start every process of a multi-worker run "
                "with the same --run-id ID (or --resume auto) to continue it from the chief's state"
            )
        if self.loaded.recipe.train.checkpoint_every is not None:  # refused before any run folder exists
            from dlrun.engine.checkpoints import check_checkpoint_every
            from dlrun.engine.data_parallel import splits_batches

            inputs, outputs = list(self.loaded.graph.inputs), self.loaded.graph.outputs
            arrays = not self.prepared.feed("train", inputs, outputs).streamed
            check_checkpoint_every(self.loaded.recipe, arrays=arrays, split=splits_batches())
        from dlrun.engine.chief_state import FINISHED, NEW, RESUME, chief_decision, share_from_chief

        status, state = NEW, b""
        if several and self.named_run:  # every process continues from the chief's state, or none does
            name = self.loaded.recipe.name
            decided = chief_decision(policy.runs_root, name, policy.run_id) if is_chief() else (0, b"")
            status, state = share_from_chief(*decided, chief=is_chief())
            if status == FINISHED:
                run = RunDir(policy.runs_root / name / str(policy.run_id))  # exists on the chief only
                say(f"run {policy.run_id} has already finished; nothing to train", quiet=policy.quiet)
                metrics = (run.read_json("eval.json") or {}).get("metrics", {})
                return TrainResult(run=run, history=run.read_json("history.json") or {}, metrics=metrics, model=None)
        if is_chief():
            return self._train(policy)
        # Other workers train in step with the chief (collectives need every process) in a scratch folder that
        # is removed once training succeeds; only the chief keeps a run folder.
        scratch = Path(tempfile.mkdtemp(prefix="dlrun-worker-"))
        worker_id = None
        if status == RESUME:  # the chief's state, as this worker's own
            from dlrun.engine.chief_state import write_state

            worker_id = "chief-state"
            write_state(RunDir(scratch / self.loaded.recipe.name / worker_id), state)
        result = self._train(replace(policy, runs_root=scratch, resume=None, folder=None, run_id=worker_id))
        shutil.rmtree(scratch, ignore_errors=True)
        return result

    def _train(self, policy: RunPolicy) -> TrainResult:
        from dlrun.engine.artifacts import write_run_record
        from dlrun.engine.callbacks import ResumeState
        from dlrun.engine.resume import open_run_folder

        fresh = True
        if policy.resume is not None:
            state = ResumeState(RunDir.open(policy.resume))
            if not state.exists():
                raise RecipeError(f"{policy.resume} has no resumable state (it stopped before its first epoch ended)")
            run, fresh = state.run, False
        elif policy.run_id is not None:  # created, or continued after a crash or preemption
            run, fresh = open_run_folder(policy.runs_root, self.loaded.recipe.name, policy.run_id)
        elif policy.folder is not None:
            policy.folder.mkdir(parents=True)
            run = RunDir(policy.folder)
        else:
            run = RunDir.create(policy.runs_root, self.loaded.recipe.name)
        # Before anything is written: refuses a folder another process trains in (the same --run-id twice);
        # `dlrun runs` shows the run running until it ends.
        live = mark_live(run.path)
        state = ResumeState(run)
        try:
            if fresh:
                write_run_record(run, self.loaded, self.prepared, self.model, policy.overrides)
            at = f"epoch {state.epoch()}" + (f", step {state.step()}" if state.step() else "")
            say(f"run folder: {run.path}" + ("" if fresh else f" (resuming after {at})"), quiet=policy.quiet)
            return self._fit_stages(run, state, resuming=not fresh)
        except RecipeError as exc:
            if not state.exists():  # failed before its first epoch: `dlrun runs` lists it failed, with the reason
                atomic_write_text(run.path / "error.log", f"error: {exc}\n")
            raise
        except RunInterrupted as exc:
            exc.run = run.path  # the CLI prints the resume command
            raise
        except Exception as exc:
            log = run.path / "error.log"
            atomic_write_text(log, traceback.format_exc())
            exc.dlrun_log = log  # type: ignore[attr-defined]
            raise
        finally:
            live.close()


def train(
    loaded: LoadedRecipe, *, extra_callbacks: list[keras.callbacks.Callback] | None = None, **policy: Any
) -> TrainResult:
    """Train the recipe once (`RunPolicy` fields as keywords: runs_root, trust, quiet, overrides, resume)."""
    return RunSession(loaded, RunPolicy(**policy), list(extra_callbacks or [])).run()


def _several_processes(recipe: Recipe) -> bool:
    from dlrun.cluster import processes
    from dlrun.multi_worker import cluster_size

    distribute = recipe.train.distribute
    return processes().count > 1 or (
        distribute is not None and distribute.strategy == "multi_worker" and cluster_size() > 1
    )
