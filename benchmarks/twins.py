"""Measuring a dlrun command against its hand-written Keras twin: process CPU time and peak memory.

Each side runs as its own child process; `os.wait4` returns that child's own resource usage (user + system
CPU seconds, peak resident memory), which on a machine shared with other work is far steadier than wall
time. The two sides alternate round by round so that drifts of the machine hit both alike; the figures are
the medians over the rounds. Also the generated data the rows read: folders of PNG/JPEG files.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


@functools.cache
def compile_dlrun() -> None:
    """Compile this checkout's dlrun to bytecode (dlrun/**/__pycache__, ignored by git), as installing a wheel
    does: pip compiles every module it installs, so the twin's TensorFlow and Keras are read as bytecode. A
    checkout imported with PYTHONDONTWRITEBYTECODE=1 (this project's machines set it) would otherwise compile
    dlrun's ~21k lines from source in every dlrun process, ~0.2 s CPU that no installed dlrun pays. Importing
    reads existing bytecode whatever that variable says; only writing it is switched off. Once a process."""
    import compileall

    if not compileall.compile_dir(ROOT / "dlrun", quiet=1):
        raise SystemExit("could not compile dlrun to bytecode")


@dataclass
class Usage:
    """One child process: CPU seconds (user + system), peak resident memory in MiB, wall seconds."""

    cpu: float
    rss_mb: float
    wall: float


def measure(cmd: list[str], cwd: Path = ROOT) -> Usage:
    """Run `cmd` to its end and return its own resource usage; its output is shown only when it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out.decode(errors="replace")[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return Usage(usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, time.perf_counter() - start)


@dataclass
class Row:
    """One benchmark row: both sides' usage per round."""

    name: str
    plain: list[Usage] = field(default_factory=list)
    dlrun: list[Usage] = field(default_factory=list)

    @staticmethod
    def _median(runs: list[Usage], attr: str) -> float:
        return statistics.median(getattr(u, attr) for u in runs)

    def line(self) -> str:
        """`name: CPU a s vs b s (ratio), per-round CPU ratios, the fastest runs' ratio, memory c vs d MiB
        (ratio)`. The fastest runs are printed as in `fixed_cost`: other tenants only ever slow a run down."""
        cpu_p, cpu_d = self._median(self.plain, "cpu"), self._median(self.dlrun, "cpu")
        mem_p, mem_d = self._median(self.plain, "rss_mb"), self._median(self.dlrun, "rss_mb")
        rounds = ", ".join(f"{d.cpu / p.cpu:.2f}" for p, d in zip(self.plain, self.dlrun, strict=True))
        fast_p, fast_d = min(u.cpu for u in self.plain), min(u.cpu for u in self.dlrun)
        return (
            f"{self.name}: CPU hand-written {cpu_p:.1f} s | dlrun {cpu_d:.1f} s | ratio {cpu_d / cpu_p:.2f} "
            f"({cpu_d - cpu_p:+.1f} s; rounds {rounds}; fastest {fast_d:.1f} / {fast_p:.1f} s = "
            f"{fast_d / fast_p:.2f}) || peak memory {mem_p:.0f} MiB | {mem_d:.0f} MiB | ratio {mem_d / mem_p:.2f}"
        )


def compare(name: str, plain: list[str], dlrun: list[str], rounds: int) -> Row:
    """Run the hand-written twin and the dlrun command alternately, `rounds` times each; print the row."""
    compile_dlrun()
    row = Row(name)
    for i in range(rounds):
        first, second = (plain, dlrun) if i % 2 == 0 else (dlrun, plain)
        a, b = measure(first), measure(second)
        row.plain.append(a if first is plain else b)
        row.dlrun.append(b if first is plain else a)
    print(row.line(), flush=True)
    return row


_BODY = """
import sys, time
import tensorflow, keras
start = time.process_time()
{work}
print("BODY", time.process_time() - start)
"""
_DLRUN_BODY = "from dlrun.cli import main\nassert main(sys.argv[1:]) == 0"


def body_cpu(code: str | None, *args: str) -> float:
    """CPU seconds a job takes in a process that has already imported TensorFlow and Keras, up to its last line
    (the interpreter's exit is left out): `code` run with `args` as sys.argv[1:], or (None) `dlrun ARGS` run
    in-process through its CLI entry point. Import and exit are the same work on both sides and the noisiest
    part of a whole process on a shared machine (import varies by ±1.5 s CPU there), so the difference of two
    bodies measures dlrun's fixed cost more closely than whole processes do."""
    work = _DLRUN_BODY if code is None else f"exec({code!r})"
    proc = subprocess.run(
        [sys.executable, "-c", _BODY.format(work=work), *args], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): body of {'dlrun' if code is None else 'the twin'}")
    return float(proc.stdout.rsplit("BODY", 1)[1])


def fixed_cost(twin: str, twin_args: list[str], dlrun_args: list[str], rounds: int) -> float:
    """dlrun's fixed cost: the median over `rounds` alternating pairs of (dlrun body - twin body), printed with
    the difference of the two sides' fastest bodies. This machine's speed drifts by up to 40 % between runs
    of the same job (other tenants), which only ever slows a run down: the fastest of several runs is the
    steadier estimate of each side's own cost, as `timeit` takes the minimum for the same reason."""
    compile_dlrun()
    plain, ours = [], []
    for i in range(rounds):
        if i % 2 == 0:
            plain.append(body_cpu(twin, *twin_args))
            ours.append(body_cpu(None, *dlrun_args))
        else:
            ours.append(body_cpu(None, *dlrun_args))
            plain.append(body_cpu(twin, *twin_args))
    differences = [d - p for p, d in zip(plain, ours, strict=True)]
    median = statistics.median(differences)
    spread = ", ".join(f"{d:+.2f}" for d in differences)
    print(
        f"fixed cost, in-process (TF import and exit left out): {median:+.2f} s CPU (rounds {spread}); "
        f"fastest bodies {min(ours):.2f} - {min(plain):.2f} = {min(ours) - min(plain):+.2f} s",
        flush=True,
    )
    return median


def python(code: str, *args: str) -> list[str]:
    """A hand-written script as a command line."""
    return [sys.executable, "-c", code, *args]


def dlrun(*args: str) -> list[str]:
    """A dlrun command line (this checkout's dlrun)."""
    return [sys.executable, "-m", "dlrun", *args]


def image_folder(root: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], ext: str) -> Path:
    """Write `<root>/<split>/<label>/<n>.<ext>` for every image of every split; returns `root`."""
    from PIL import Image

    for split, xs in images.items():
        for label in np.unique(labels[split]):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
        for i, (x, y) in enumerate(zip(xs, labels[split], strict=True)):
            Image.fromarray(x).save(root / split / str(y) / f"{i:05d}.{ext}")
    return root
