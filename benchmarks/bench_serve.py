"""Load test of `dlrun serve`: a tiny trained run served by the real CLI on 127.0.0.1, a few thousand
one-row requests from a few concurrent keep-alive clients; prints p50/p99 latency, requests/s and the
largest batch the server formed. Bounded: stops after `--requests` or `--seconds`, whichever comes first,
and stops the server it started."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}

RECIPE = """
name: bench_serve
seed: 0
data:
  source: jsonl
  path: flowers.jsonl
  inputs:
    size: {from: [length, width], steps: [{standardize: true}]}
  targets: {species: {from: species}}
model:
  inputs: {size: {shape: [2]}}
  layers:
    - {type: Dense, units: 32, activation: relu}
    - {name: species, type: Dense, units: 3, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
train: {epochs: 1, batch_size: 32, tensorboard: false}
"""
NAMES = ["iris", "lily", "rose"]


def _row(i: int) -> dict:
    k = i % 3
    return {"length": 2.0 + 3 * k + (i % 7) / 10, "width": 1.0 + k + (i % 5) / 10}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(folder: Path) -> Path:
    lines = [json.dumps({**_row(i), "species": NAMES[i % 3]}) for i in range(300)]
    (folder / "flowers.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "recipe.yaml").write_text(RECIPE)
    out = subprocess.run(
        [sys.executable, "-m", "dlrun", "train", "recipe.yaml", "--runs", "runs", "--json"],
        cwd=folder, env=ENV, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return Path(json.loads(out.stdout)["run"])


def _get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _client(port: int, count: int, deadline: float, latencies: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    for i in range(count):
        if time.monotonic() > deadline:
            break
        body = json.dumps({"rows": [_row(i)]})
        start = time.perf_counter()
        conn.request("POST", "/predict", body, headers)
        response = conn.getresponse()
        data = response.read()
        latencies.append(time.perf_counter() - start)
        if response.status != 200:
            errors.append(f"{response.status}: {data[:200]!r}")
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=120.0, help="stop sending after this long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = _train(Path(tmp))
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "dlrun", "serve", str(run), "--port", str(port)],
            cwd=tmp, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            up_by = time.monotonic() + 180
            while True:
                try:
                    _get(port, "/health")
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > up_by:
                        print(f"server did not start: {server.stderr.read() if server.stderr else ''}")
                        return 1
                    time.sleep(0.2)
            _client(port, 20, time.monotonic() + 60, [], [])  # warm-up: the model's first calls trace
            latencies: list[float] = []
            errors: list[str] = []
            per_client = args.requests // args.clients
            deadline = time.monotonic() + args.seconds
            threads = [
                threading.Thread(target=_client, args=(port, per_client, deadline, latencies, errors))
                for _ in range(args.clients)
            ]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            health = _get(port, "/health")
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"dlrun serve, 127.0.0.1: {len(latencies)} one-row requests from {args.clients} keep-alive clients in "
        f"{elapsed:.1f} s: {len(latencies) / elapsed:.0f} requests/s, latency p50 {cuts[49] * 1000:.1f} ms, "
        f"p99 {cuts[98] * 1000:.1f} ms; {health['batches']} model calls, largest batch {health['largest_batch']} "
        f"requests; errors: {len(errors)}"
    )
    for e in errors[:3]:
        print("  ", e)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
