"""Resume without babysitting: `--run-id` (idempotent restarts), `--resume auto`, step-level checkpoints that
resume mid-epoch at the exact batch, bit-identical to an uninterrupted run, and atomic state writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlrun import api
from dlrun.errors import RecipeError, RunInterrupted
from tests.conftest import ROOT, write_recipe

RECIPE = """
name: resumable
seed: 11
data:
  source: npz
  path: data.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y, steps: [{one_hot: 3}]}}
  validation_split: 0.2
model:
  inputs: {x: {shape: [16]}}
  layers:
    - {type: Dense, units: 32, activation: relu}
    - {type: Dropout, rate: 0.3}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.003}
  loss: categorical_crossentropy
  metrics: [accuracy]
train:
  epochs: EPOCHS
  batch_size: 16
  deterministic: true
  tensorboard: false
  checkpoint_every: EVERY
"""


def _recipe(tmp_path: Path, *, epochs: int = 3, every: int | str = 5, n: int = 400) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = x[:, :3].argmax(axis=1).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x[:100], y_test=y[:100])
    return write_recipe(tmp_path, RECIPE.replace("EPOCHS", str(epochs)).replace("EVERY", json.dumps(every)))


def _weights(run: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(str(run / "model.keras")).get_weights()


def _assert_same_weights(a: Path, b: Path) -> None:
    for x, y in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _without_timing(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}


def _preempt(at: int):
    """A callback that sends this process SIGTERM (a scheduler's preemption) after `at` training steps."""
    import keras

    class Preempt(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == at:
                os.kill(os.getpid(), signal.SIGTERM)

    return Preempt()


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_the_exact_step_and_run_id_resumes_bit_identical(tmp_path):
    """20 steps per epoch; SIGTERM after step 27 (epoch 2, batch 7): the state is saved at that step (not at
    the last checkpoint), and the same command with the same --run-id finishes it like an uninterrupted run."""
    recipe = _recipe(tmp_path, epochs=3, every=100)
    straight = api.train(api.load_recipe(recipe), runs_root=tmp_path / "straight", quiet=True)

    runs = tmp_path / "runs"
    with pytest.raises(RunInterrupted):
        api.train(api.load_recipe(recipe), runs_root=runs, run_id="job-1", quiet=True, extra_callbacks=[_preempt(27)])
    run = runs / "resumable" / "job-1"
    state = json.loads((run / "resume" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 7)
    assert not (run / "model.keras").exists()

    resumed = api.train(api.load_recipe(recipe), runs_root=runs, run_id="job-1", quiet=True)
    assert resumed.run.path == run.resolve()
    _assert_same_weights(straight.run.path, run)
    # The cut epoch's running loss and accuracy were restored too: its logged numbers are the uninterrupted ones.
    assert _without_timing(resumed.history) == _without_timing(straight.history)
    assert resumed.metrics == straight.metrics

    again = api.train(api.load_recipe(recipe), runs_root=runs, run_id="job-1", quiet=True)
    assert again.model is None and again.metrics == straight.metrics  # finished: reported, not retrained


def _fake_run(runs: Path, recipe: Path, run_id: str, *, overrides: tuple[str, ...] = (), finished: bool = False,
              saved_at: float = 0.0) -> Path:  # fmt: skip
    """A run folder as training leaves it (recipe.yaml; a saved state, or a model and eval.json), no training."""
    from dlrun.engine.resume import recorded_recipe
    from dlrun.recipe.compose import dump_yaml

    folder = runs / "resumable" / run_id
    (folder / "resume").mkdir(parents=True)
    (folder / "recipe.yaml").write_text(dump_yaml(recorded_recipe(api.load_recipe(recipe, overrides=overrides))))
    if finished:
        (folder / "model.keras").write_bytes(b"a model")
        (folder / "eval.json").write_text(json.dumps({"split": "test", "metrics": {"accuracy": 0.5}}))
    np.savez(folder / "resume" / "state.npz", meta=np.frombuffer(b'{"epoch": 1, "step": 2, "history": {}}', "uint8"))
    (folder / "resume" / "state.json").write_text('{"epoch": 1, "step": 2, "history": {}}')
    os.utime(folder / "resume" / "state.npz", (saved_at, saved_at))
    return folder


def test_run_id_of_a_finished_run_exits_0_and_another_recipe_exits_2(cli, tmp_path):
    recipe = _recipe(tmp_path, n=64)
    runs = tmp_path / "runs"
    folder = _fake_run(runs, recipe, "nightly", finished=True)

    done = cli("train", str(recipe), "--runs", str(runs), "--run-id", "nightly", "--json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == {"run": str(folder.resolve()), "metrics": {"accuracy": 0.5}}
    assert (folder / "model.keras").read_bytes() == b"a model"  # not retrained
    said = cli("train", str(recipe), "--runs", str(runs), "--run-id", "nightly")
    assert said.code == 0 and "run nightly has already finished" in said.stderr, said.stderr

    other = cli("train", str(recipe), "--runs", str(runs), "--run-id", "nightly", "--set", "train.batch_size=8")
    assert other.code == 2
    assert other.stderr.strip().splitlines() == [
        f"error: run 'nightly' ({folder.resolve()}) was started from a different recipe (train.batch_size "
        "differs); give another --run-id, or the recipe it was started with"
    ]
    bad = cli("train", str(recipe), "--runs", str(runs), "--run-id", "../escape")
    assert bad.code == 2 and "is not a plain folder name" in bad.stderr


def test_resume_auto_picks_the_latest_resumable_run_of_the_same_recipe(tmp_path):
    from dlrun.engine.resume import AUTO, settle_run_id

    recipe = _recipe(tmp_path, n=64)
    runs = tmp_path / "runs"
    loaded = api.load_recipe(recipe)
    assert settle_run_id(runs, loaded, None, AUTO) is None  # nothing to resume: a new run
    _fake_run(runs, recipe, "older", saved_at=1000)
    _fake_run(runs, recipe, "newer", saved_at=2000)
    _fake_run(runs, recipe, "finished", finished=True, saved_at=3000)  # done: not resumable
    _fake_run(runs, recipe, "other", overrides=("train.batch_size=8",), saved_at=4000)  # same name, other recipe
    assert settle_run_id(runs, loaded, None, AUTO) == "newer"
    with pytest.raises(RecipeError, match="not both"):
        settle_run_id(runs, loaded, "x", AUTO)


@pytest.mark.parametrize("dies_at", [1, 2], ids=["writing-the-arrays", "writing-state-json"])
def test_a_kill_while_the_state_is_written_leaves_a_consistent_state(tmp_path, monkeypatch, dies_at):
    """Killed before the new state.npz is in place: the previous state, whole. Killed after it, before
    state.json: the new state, whole (before, the weights were the new epoch's and the position the old's)."""
    import keras

    from dlrun.engine.callbacks import ResumeState
    from dlrun.engine.rundir import RunDir

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    model.optimizer.build(model.trainable_variables)
    state = ResumeState(RunDir(tmp_path))
    state.save(model, 1, {"loss": [1.0]}, step=3)
    before = [np.asarray(v).copy() for v in model.variables]
    for v in model.variables:
        v.assign(np.full(v.shape, 7.0, "float32"))
    after = [np.asarray(v).copy() for v in model.variables]

    replace, calls = os.replace, []

    def dying_replace(*args, **kwargs):
        calls.append(args)
        if len(calls) == dies_at:
            raise KeyboardInterrupt  # stands for SIGKILL between writing a file and renaming it
        return replace(*args, **kwargs)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        state.save(model, 2, {"loss": [1.0, 0.5]}, step=5)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["state.json", "state.npz"]  # no leftovers
    reread = ResumeState(RunDir(tmp_path))
    position, expected = ((1, 3), before) if dies_at == 1 else ((2, 5), after)
    assert (reread.epoch(), reread.step()) == position
    reread.restore(model)
    for v, values in zip(model.variables, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(v), values)


@pytest.mark.parametrize(
    ("every", "override", "message"),
    [
        (5, "train.deterministic=false", "train.checkpoint_every needs train.deterministic: true"),
        ("10x", None, "train.checkpoint_every"),
        (0, None, "train.checkpoint_every"),
    ],
)
def test_checkpoint_every_it_cannot_honour_is_a_located_error(tmp_path, every, override, message):
    recipe = _recipe(tmp_path, every=every, n=64)
    runs = tmp_path / "runs"
    with pytest.raises(RecipeError) as info:
        api.train(api.load_recipe(recipe, overrides=[override] if override else []), runs_root=runs, quiet=True)
    assert message in str(info.value)
    where = info.value.location
    line = next(i for i, text in enumerate(recipe.read_text().splitlines(), 1) if "checkpoint_every:" in text)
    assert where is not None and (where.file, where.line) == (str(recipe), line), where
    assert not runs.exists()  # refused before any run folder was made


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _position(state: Path, steps_per_epoch: int) -> int:
    try:
        meta = json.loads(state.read_text())
    except (OSError, ValueError):
        return -1
    return meta["epoch"] * steps_per_epoch + meta["step"]


@pytest.mark.slow
def test_sigkill_at_random_steps_again_and_again_gives_the_uninterrupted_weights(tmp_path):
    """`dlrun train RECIPE --run-id ID` SIGKILLed three times at random steps (checkpoints every 3 steps, so
    each restart replays a few steps, and a kill may land while a state is being written), restarted each
    time with the same command: the final weights are bit-identical to an uninterrupted run's."""
    steps_per_epoch = 40  # 640 samples / 16
    recipe = _recipe(tmp_path, epochs=3, every=3, n=800)  # 640 train, 160 validation
    straight = api.train(api.load_recipe(recipe), runs_root=tmp_path / "straight", quiet=True)

    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "dlrun", "train", str(recipe), "--runs", str(runs), "--run-id", "job", "--quiet"]
    state = runs / "resumable" / "job" / "resume" / "state.json"
    rng = random.Random(1)
    reached = 0
    for _ in range(3):
        target = reached + rng.randint(4, 30)
        proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while _position(state, steps_per_epoch) < target:
            if proc.poll() is not None:
                pytest.fail(f"training ended before step {target}: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        reached = _position(state, steps_per_epoch)
        assert reached < 3 * steps_per_epoch
    assert not (runs / "resumable" / "job" / "model.keras").exists()

    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_weights(straight.run.path, runs / "resumable" / "job")
    history = json.loads((runs / "resumable" / "job" / "history.json").read_text())
    assert _without_timing(history) == _without_timing(straight.history)


def test_a_duration_saves_the_state_when_the_time_has_passed_not_before(monkeypatch):
    """`checkpoint_every: "90s"` (durations had no test): a save at the first step end 90 s after the last
    save, at the exact position, none before; the clock restarts at each save; an epoch's last step never
    saves (the epoch end does)."""
    from types import SimpleNamespace

    from dlrun.engine import checkpoints

    assert checkpoints.interval("90s") == (None, 90.0) and checkpoints.interval("10m") == (None, 600.0)
    assert checkpoints.interval("2h") == (None, 7200.0) and checkpoints.interval(25) == (25, None)
    now = [1000.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: now[0])
    saved: list[tuple[int, int]] = []
    state = SimpleNamespace(save=lambda model, epoch, history, step: saved.append((epoch, step)))
    callback = checkpoints.StepCheckpoint(
        state, {}, lambda: False, steps_per_epoch=10, steps=None, seconds=checkpoints.interval("90s")[1]
    )
    callback.set_model(SimpleNamespace())
    callback.on_epoch_begin(0)
    for batch, elapsed in enumerate([30, 30, 29, 2, 60, 40, 30, 30, 30, 200]):
        now[0] += elapsed
        callback.on_train_batch_end(batch, {"loss": 0.5})
    # 89 s after the start at step 3: no save; 91 s at step 4: saved; 100 s later at step 6, 90 s later at
    # step 9; the 200 s of step 10 end the epoch, which saves by itself
    assert saved == [(0, 4), (0, 6), (0, 9)]
    callback.on_epoch_begin(1)
    now[0] += 500
    callback.on_train_batch_end(0, {"loss": float("nan")})  # due, but a diverged state never replaces a good one
    assert saved == [(0, 4), (0, 6), (0, 9)]


def test_a_run_id_another_process_is_training_is_refused_until_that_process_ends(tmp_path):
    """Two processes given the same --run-id (a scheduler restarting a job whose first attempt still runs) both
    wrote the same run folder's state. Now the second is refused, writing nothing, while the first lives; a
    holder killed with SIGKILL releases the folder at once (the kernel drops its flock)."""
    recipe = _recipe(tmp_path, epochs=1, n=64)
    runs = tmp_path / "runs"
    folder = runs.resolve() / "resumable" / "nightly"
    folder.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from dlrun.engine.liveness import mark_live; "
         "mark_live(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(folder)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RecipeError) as caught:
            api.train(recipe, runs_root=runs, run_id="nightly", quiet=True)
        assert f"run folder {folder} is in use: process {holder.pid} on {os.uname().nodename}" in str(caught.value)
        assert sorted(p.name for p in folder.iterdir()) == ["live.json"]  # nothing written beside the holder's mark
    finally:
        holder.kill()
        holder.wait()
    result = api.train(recipe, runs_root=runs, run_id="nightly", quiet=True)
    assert result.run.path == folder and (folder / "model.keras").is_file()
