"""`dlrun tune` past one process: several workers on one study (journal file, PostgreSQL), stale trials, and
multi-objective search with its Pareto front."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dlrun.verbs.tune.study import run_study
from tests.conftest import write_digits, write_recipe

optuna = pytest.importorskip("optuna")

RECIPE = """
name: digits_parallel
seed: 0
data:
  source: npz
  path: digits.npz
  inputs: {pixels: {from: x}}
  targets: {digit: {from: y, steps: [{one_hot: 10}]}}
  validation_split: 0.25
model:
  inputs: {pixels: {shape: [64]}}
  layers:
    - {name: hidden, type: Dense, units: 16, activation: relu}
    - {name: digit, type: Dense, units: 10, activation: softmax}
compile: {optimizer: adam, loss: categorical_crossentropy, metrics: [accuracy], jit_compile: false}
train: {epochs: 1, batch_size: 32, tensorboard: false}
search:
  space:
    model.layers[0].units: {choice: [2, 8, 32]}
    compile.optimizer.learning_rate: {float: [1.0e-3, 3.0e-2], log: true}
  objective: {metric: val_accuracy, direction: max}
  trials: 3
  sampler: random
  pruner: none
"""


def _recipe(tmp_path: Path, objective: str | None = None) -> Path:
    write_digits(tmp_path, n_train=200, n_test=50)
    text = RECIPE if objective is None else RECIPE.replace("{metric: val_accuracy, direction: max}", objective)
    return write_recipe(tmp_path, text)


def _check_trials(study_dir: Path, count: int) -> list[dict]:
    """Exactly `count` complete trials numbered 0..count-1, each in its own run folder."""
    rows = json.loads((study_dir / "leaderboard.json").read_text())["trials"]
    assert sorted(r["trial"] for r in rows) == list(range(count)), rows
    assert all(r["state"] == "complete" for r in rows), rows
    runs = [r["run"] for r in rows]
    assert len(set(runs)) == count and all((study_dir / r / "model.keras").is_file() for r in runs)
    assert {Path(r).parts[1] for r in runs} == {f"{n:04d}" for n in range(count)}
    return rows


def _workers(storage: object) -> set[str]:
    study = optuna.load_study(study_name="dlrun", storage=storage)
    return {t.user_attrs["worker"] for t in study.trials}


# ----------------------------------------------------------------------------------------------------
# stale trials: only a dead worker's


def test_a_live_workers_running_trial_is_not_failed_by_another_worker(tmp_path):
    from dlrun.verbs.tune.workers import fail_stale, open_storage, worker_name

    storage = open_storage(tmp_path, None)
    study = optuna.create_study(storage=storage, study_name="dlrun")
    live, dead, unnamed = study.ask(), study.ask(), study.ask()
    live.set_user_attr("worker", worker_name())
    proc = subprocess.Popen(["true"])
    proc.wait()  # an exited (and reaped) process: its pid names no live worker
    dead.set_user_attr("worker", f"{socket.gethostname()}:{proc.pid}:1")
    fail_stale(study, storage)
    states = {t.number: t.state for t in study.get_trials()}
    running, failed = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
    assert states == {live.number: running, dead.number: failed, unnamed.number: failed}


# ----------------------------------------------------------------------------------------------------
# multi-objective


def _dominates(a: dict, b: dict) -> bool:
    """Minimizing both val_loss and params."""
    keys = ("val_loss", "params")
    return all(a[k] <= b[k] for k in keys) and any(a[k] < b[k] for k in keys)


@pytest.mark.slow
def test_multi_objective_leaderboard_shows_the_pareto_front(tmp_path):
    from rich.console import Console

    from dlrun.verbs.tune.leaderboard import render_leaderboard

    recipe = _recipe(tmp_path, "[val_loss, params]")
    result = run_study(recipe, trials=3, study_dir=tmp_path / "s", quiet=True)
    assert result.objectives == [("val_loss", "minimize"), ("params", "minimize")]
    rows = [r for r in result.rows if r["state"] == "complete"]
    assert len(rows) == 3
    for r in rows:  # params is the model's parameter count: 64*u + u + u*10 + 10
        assert r["params"] == 75 * r["model.layers[0].units"] + 10
    front = sorted(r["trial"] for r in rows if not any(_dominates(o, r) for o in rows))
    assert result.pareto == front and front
    assert [r["pareto"] for r in rows] == sorted((r["pareto"] for r in rows), reverse=True)  # the front first
    assert {r["trial"] for r in rows if r["pareto"]} == set(front)
    stored = json.loads((tmp_path / "s" / "leaderboard.json").read_text())
    assert stored["pareto"] == front and [o["metric"] for o in stored["objectives"]] == ["val_loss", "params"]
    assert result.best_recipe is None  # no single best: the front is the answer
    console = Console(width=200, record=True)
    console.print(render_leaderboard(result))
    text = " ".join(console.export_text().split())
    assert f"Pareto front: trials {', '.join(map(str, front))}" in text and "params" in text


def test_objective_list_is_checked(tmp_path):
    from dlrun.errors import RecipeError
    from dlrun.verbs.tune.study import load_space

    with pytest.raises(RecipeError, match="lists 'val_loss' twice"):
        load_space(_recipe(tmp_path, "[val_loss, val_loss]"))
    with pytest.raises(RecipeError, match="better high or low"):
        load_space(_recipe(tmp_path, "[val_loss, val_wobble]"))


# ----------------------------------------------------------------------------------------------------
# several workers on one study


@pytest.mark.slow
def test_three_workers_share_one_study_through_a_journal_file(tmp_path):
    recipe = _recipe(tmp_path)
    journal = tmp_path / "shared" / "study.journal"
    result = run_study(recipe, trials=3, study_dir=tmp_path / "s", storage=str(journal), workers=3, quiet=True)
    assert result.ran == 3
    _check_trials(tmp_path / "s", 3)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert len(_workers(storage)) > 1  # the trials really ran in several processes
    assert not (tmp_path / "s" / "study.journal").exists()  # --storage, not the folder's default journal
    # resumed with a larger budget by one worker: the study goes on from 3
    again = run_study(recipe, trials=4, study_dir=tmp_path / "s", storage=str(journal), quiet=True)
    assert again.ran == 1
    _check_trials(tmp_path / "s", 4)


def _postgres_bin() -> Path | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


@pytest.fixture
def postgres_url():
    """A PostgreSQL server started here: initdb in a temporary folder as the `postgres` user (postgres refuses
    root), on a free 127.0.0.1 port, trust auth for local connections only; stopped and removed afterwards."""
    pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg (pip install 'psycopg[binary]')")
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start postgres as another user")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="dlrun-pg-"))
    data = folder / "data"
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
    out = run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    assert out.returncode == 0, out.stderr
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} -c fsync=off"
    out = run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
    try:
        assert out.returncode == 0, out.stderr + (folder / "log").read_text(errors="replace")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_workers_share_one_study_through_a_real_postgresql_server(tmp_path, postgres_url):
    recipe = _recipe(tmp_path)
    start = time.monotonic()
    result = run_study(recipe, trials=3, study_dir=tmp_path / "s", storage=postgres_url, workers=2, quiet=True)
    assert result.ran == 3, time.monotonic() - start
    _check_trials(tmp_path / "s", 3)
    assert len(_workers(optuna.storages.RDBStorage(postgres_url))) == 2
