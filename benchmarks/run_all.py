"""`make bench`: every benchmark script in this folder, one after another, printing its ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    status = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        if script.name == "bench_gpu.py":
            print("skipped: GPU figures; run `KERAS_BACKEND=jax python benchmarks/bench_gpu.py --data mnist.npz` "
                  "on a machine with a GPU (see benchmarks/RESULTS.md)")  # fmt: skip
            continue
        status |= subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
