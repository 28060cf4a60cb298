"""A run in progress marks its folder: `live.json` (pid, host, process start), refreshed every
HEARTBEAT_SECONDS and removed when the run ends, so `dlrun runs` shows it running, not incomplete.

On the marking host the pid decides (a run killed with SIGKILL leaves the file, but not its process); on
another host sharing the folder, a heartbeat younger than STALE_SECONDS does.

The mark is also the folder's lock: a second process given the same `--run-id` (a scheduler restarting a job
whose first attempt still runs) is refused instead of writing the same state files. On one host an exclusive
`flock` on the folder decides (the kernel releases it when its holder dies, however it dies); a live mark
from another host sharing the folder refuses too.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from pathlib import Path

from dlrun.errors import RecipeError
from dlrun.files import atomic_write_text

try:
    import fcntl
except ImportError:  # not POSIX: the live mark alone tells a second process
    fcntl = None  # type: ignore[assignment]

LIVE_FILE = "live.json"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the command name


class LiveMark:
    """The marker of one live run; `close()` stops the heartbeat and removes the file."""

    def __init__(self, run_path: Path) -> None:
        self.file = Path(run_path) / LIVE_FILE
        self._lock = _lock_folder(Path(run_path))
        if is_live(run_path):  # marked by a process on another host (on this one, the lock has decided)
            if self._lock is not None:
                os.close(self._lock)
            raise _busy(self.file)
        self.record = {"pid": os.getpid(), "host": platform.node(), "start": _process_start(os.getpid())}
        self._stop = threading.Event()
        atomic_write_text(self.file, json.dumps(self.record) + "\n")
        self._thread = threading.Thread(target=self._beat, name="dlrun-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(self.file)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            if json.loads(self.file.read_text(encoding="utf-8")) == self.record:  # ours, not a later resume's
                self.file.unlink()
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None


def _lock_folder(folder: Path) -> int | None:
    """An exclusive, non-blocking flock on the run folder itself (no lock file left behind); the open
    descriptor holds it. Refuses when another process holds it."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(folder / LIVE_FILE) from None
    except OSError:  # a file system without flock: the live mark alone tells a second process
        os.close(fd)
        return None
    return fd


def _busy(live_file: Path) -> RecipeError:
    try:
        record = json.loads(live_file.read_text(encoding="utf-8"))
        who = f"process {record['pid']} on {record['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        who = "another process"
    return RecipeError(
        f"run folder {live_file.parent} is in use: {who} is training in it; wait for it to end (or stop it), "
        "then run the same command again"
    )


def mark_live(run_path: Path) -> LiveMark:
    """Mark the run folder live and hold its lock until `close()` (call it in a `finally`); a RecipeError
    when another process is training in it."""
    return LiveMark(run_path)


def is_live(run_path: Path) -> bool:
    """Whether a process is training in this run folder now."""
    file = Path(run_path) / LIVE_FILE
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        age = time.time() - file.stat().st_mtime
        pid, host = int(record["pid"]), str(record["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    alive = process_alive(host, pid, record.get("start"))
    return age < STALE_SECONDS if alive is None else alive


def process_name() -> str:
    """`host:pid:start` of this process: who owns a run folder or a tune trial."""
    return f"{platform.node()}:{os.getpid()}:{_process_start(os.getpid()) or ''}"


def process_alive(host: str, pid: int, start: str | None) -> bool | None:
    """Whether process `pid`, started at `start` (clock ticks; None or '': unknown), still runs on `host`;
    None when `host` is another machine, where only a heartbeat can tell."""
    if host != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return not start or _process_start(pid) in (None, start)
