"""`distribute: multi_worker`: MultiWorkerMirroredStrategy driven by TF_CONFIG, two processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import hosts
from tests.conftest import ROOT, SHARED_DATA, write_recipe

pytest.importorskip("sklearn")

# Real data: scikit-learn's 1,797 handwritten digits (8x8), a quarter held out, stratified.
DIGITS = """
name: digits_mw
seed: 3
data:
  source: sklearn
  name: digits
  test_split: 0.25
  stratify: true
  inputs: {pixels: {from: x, steps: [{scale: {divide: 16}}]}}
  targets: {digit: {from: y, steps: [{one_hot: 10}]}}
model:
  inputs: {pixels: {shape: [64]}}
  layers:
    - {type: Dense, units: 64, activation: relu}
    - {name: digit, type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 0.005}
  loss: categorical_crossentropy
  metrics: [accuracy]
train: {epochs: 10, batch_size: 64, tensorboard: false}
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tf_config(ports: list[int], index: int, hosts: list[str] | None = None) -> str:
    workers = [f"{host}:{p}" for host, p in zip(hosts or ["127.0.0.1"] * len(ports), ports, strict=True)]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def _dlrun(recipe: Path, runs: Path, env: dict[str, str], prefix: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "dlrun", "train", str(recipe), "--runs", str(runs), "--json"],
        cwd=ROOT,
        env={**os.environ, "DLRUN_DATA_DIR": str(SHARED_DATA), "NO_COLOR": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[dict]:
    """Wait for every process; on a timeout or a failure kill them all, so the test never hangs."""
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    """DIGITS trained by one process without distribution: the band the workers must reach."""
    folder = tmp_path_factory.mktemp("single")
    (result,) = _finish([_dlrun(write_recipe(folder, DIGITS, "single.yaml"), folder / "runs", {})])
    return result


DISTRIBUTED = DIGITS.replace("tensorboard: false}", "tensorboard: false, distribute: {strategy: multi_worker}}")


@pytest.mark.slow
def test_two_workers_on_localhost_train_and_match_one_worker(tmp_path, single):
    """Two worker processes reach the single-process accuracy band; only the chief leaves a run folder.

    Measured (2 CPU cores): one process 0.967 test accuracy, two workers 0.967 (about 35 s for both).
    """
    recipe = write_recipe(tmp_path, DISTRIBUTED, "workers.yaml")
    ports = _free_ports(2)
    runs = tmp_path / "runs"
    chief, worker = _finish([_dlrun(recipe, runs, {"TF_CONFIG": _tf_config(ports, i)}) for i in range(2)])

    assert single["metrics"]["accuracy"] > 0.93
    assert abs(chief["metrics"]["accuracy"] - single["metrics"]["accuracy"]) < 0.03
    # Both workers hold the same (mirrored, all-reduced) weights, so they evaluate identically.
    assert worker["metrics"] == pytest.approx(chief["metrics"], abs=1e-6)
    assert worker["run"] is None
    folders = list((runs / "digits_mw").iterdir())
    assert [Path(chief["run"])] == folders
    history = json.loads((folders[0] / "history.json").read_text())
    assert len(history["epoch"]) == 10
    assert (folders[0] / "model.keras").is_file()


@pytest.mark.slow
def test_two_workers_on_two_hosts_train_and_match_one_worker(tmp_path, single):
    """The same over a real link: two network namespaces joined by a veth pair (tests/hosts.py), one worker in
    each, TF_CONFIG naming each worker by its own namespace's address."""
    reason = hosts.skip_reason()
    if reason:
        pytest.skip(reason)
    recipe = write_recipe(tmp_path, DISTRIBUTED, "workers.yaml")
    runs = tmp_path / "runs"
    with hosts.two_hosts() as pair:
        addresses = [h.address for h in pair]
        config = [_tf_config([2222, 2222], i, addresses) for i in range(2)]  # the namespaces' ports are all free
        chief, worker = _finish(
            [_dlrun(recipe, runs, {"TF_CONFIG": config[i]}, h.command()) for i, h in enumerate(pair)]
        )
    assert worker["run"] is None and worker["metrics"] == pytest.approx(chief["metrics"], abs=1e-6)
    assert [Path(chief["run"])] == list((runs / "digits_mw").iterdir())
    assert chief["metrics"]["accuracy"] > 0.93
    assert abs(chief["metrics"]["accuracy"] - single["metrics"]["accuracy"]) < 0.03
    print(f"two hosts {chief['metrics']['accuracy']:.4f}, one process {single['metrics']['accuracy']:.4f}")


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        (None, "strategy multi_worker needs TF_CONFIG describing the cluster"),
        ("{cluster", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG needs "cluster"'),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'TF_CONFIG needs "task"'),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "task index 3"),
    ],
)
def test_bad_tf_config_is_one_located_line(cli, tmp_path, monkeypatch, tf_config, message):
    text = DISTRIBUTED
    recipe = write_recipe(tmp_path, text)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    env = {"TF_CONFIG": tf_config} if tf_config is not None else {}
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), env=env)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "train.distribute.strategy" in result.stderr and message in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("model.keras"))
