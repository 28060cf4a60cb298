"""Several `dlrun tune` workers on one study: the Optuna storage they share (a journal file, or an RDB for a
cluster), the lock under which one worker at a time counts the trials and creates the next, who owns a
running trial (and whether that process is still alive), and starting N local worker processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dlrun.console import say
from dlrun.engine.liveness import process_alive, process_name
from dlrun.errors import RecipeError

if TYPE_CHECKING:
    import optuna

STUDY_NAME = "dlrun"
HEARTBEAT_S = 30  # RDB storage: a worker's running trial is failed after 3 missed heartbeats


def open_storage(folder: Path, storage: str | None) -> optuna.storages.BaseStorage:
    """Optuna storage: the study folder's journal file (default), another journal file (a path; safe for
    processes on one machine, and on a shared file system with working locks), or an RDB URL
    (`sqlite:///study.db` on one machine, `postgresql://user@host/db` for a cluster; stale trials of a
    crashed worker are failed by Optuna's heartbeat)."""
    import optuna

    journal = optuna.storages.journal
    if storage is None:
        folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(folder / "study.journal")))
    if "://" not in storage:
        path = Path(storage)
        if path.is_dir():
            raise RecipeError(f"--storage {storage} is a folder; give a journal file or an RDB URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path)))
    scheme = storage.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise RecipeError(
            f"--storage {scheme}://...: give a journal file path, sqlite:///FILE, postgresql://... or mysql://..."
        )
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            storage.replace("postgres://", "postgresql://", 1),
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=3 * HEARTBEAT_S,
        )
    except ImportError as exc:
        raise RecipeError(f"--storage {scheme}://...: a database driver is missing ({exc})") from None
    except Exception as exc:  # sqlalchemy's OperationalError & co: an unreachable or refusing server
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecipeError(f"--storage {scheme}://...: cannot open the study database: {first[:300]}") from None


class StudyLock:
    """An exclusive lock on the study folder (flock on `study.lock`): one worker at a time counts the
    trials and creates the next. `release` may be called early; leaving the block releases it too."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "study.lock"
        self.fh: IO[str] | None = None

    def __enter__(self) -> StudyLock:
        import fcntl

        self.fh = self.path.open("a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # closing drops the flock
            self.fh = None

    def __exit__(self, *exc: object) -> None:
        self.release()


def worker_name() -> str:
    """`host:pid:start` of this process (start: its start time in clock ticks, so a reused pid differs)."""
    return process_name()


def _alive(worker: str) -> bool | None:
    """Whether the worker that owns a trial still runs: None when it ran on another host (unknown)."""
    host, _, rest = worker.partition(":")
    pid, _, start = rest.partition(":")
    return process_alive(host, int(pid), start) if pid.isdigit() else None


def run_workers(
    recipe: Path,
    overrides: tuple[str, ...],
    target: int,
    folder: Path,
    timeout: float | None,
    trust: bool,
    storage: str | None,
    workers: int,
) -> None:
    """Start `workers` processes on the study (each `python -m dlrun.verbs.tune.worker`) and wait for them."""
    import subprocess
    import sys

    args = {
        "recipe": str(recipe),
        "overrides": list(overrides),
        "trials": target,
        "study_dir": str(folder),
        "timeout": timeout,
        "trust": trust,
        "storage": storage,
    }
    procs = [
        subprocess.Popen([sys.executable, "-m", "dlrun.verbs.tune.worker", json.dumps({**args, "worker": i})])
        for i in range(workers)
    ]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:  # they got the terminal's SIGINT too: let them save their interrupted trials
            p.wait()
        raise
    failed = [i for i, c in enumerate(codes) if c not in (0,)]
    if failed:
        say(f"warning: tune worker(s) {', '.join(map(str, failed))} exited with {[codes[i] for i in failed]}")


def fail_stale(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Trials left RUNNING by a killed worker on this host become FAIL (interrupted); they do not count.
    A running trial of a live worker, or of one on another host (an RDB's heartbeat handles those), stays.
    Called under the study lock: a trial not yet marked with its worker's name is a leftover."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    stale = [t for t in running if "worker" not in t.user_attrs or _alive(t.user_attrs["worker"]) is False]
    if not stale:
        return
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
