"""Shared fixtures: real data location, a CLI runner that returns (exit code, stdout, stderr)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SHARED_DATA = Path(os.environ.get("DLRUN_DATA_DIR") or ROOT.parent / "shared" / "data")


@dataclass
class CliResult:
    """Outcome of one `dlrun` invocation."""

    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600) -> CliResult:
    """Run `python -m dlrun ARGS` in a subprocess (a fresh interpreter, like a user's shell)."""
    full_env = {**os.environ, "DLRUN_DATA_DIR": str(SHARED_DATA), "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    """The `run_cli` helper."""
    return run_cli


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip with the reason when it is absent."""
    if not (SHARED_DATA / "mnist.npz").is_file():
        pytest.skip(f"real datasets not found in {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _data_dir_env(monkeypatch):
    monkeypatch.setenv("DLRUN_DATA_DIR", str(SHARED_DATA))


def write_recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    """Write recipe text to a file under tmp_path and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def write_digits(folder: Path, n_train: int = 600, n_test: int = 300, seed: int = 0):
    """sklearn's 8x8 digits as an npz (x_train/y_train/x_test/y_test), scaled to [0, 1]; returns the test split."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype("float32")
    y = digits.target[order].astype("int64")
    test = slice(n_train, n_train + n_test)
    np.savez(folder / "digits.npz", x_train=x[:n_train], y_train=y[:n_train], x_test=x[test], y_test=y[test])
    return x[test], y[test]
