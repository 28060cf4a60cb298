"""`dlrun serve RUN`: a real HTTP server on 127.0.0.1 (a free port), a real client (urllib), a trained tiny run."""

from __future__ import annotations

import csv
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dlrun import api
from tests.conftest import write_recipe

pytest.importorskip("fastapi", reason="dlrun serve needs the serve extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="dlrun serve needs the serve extra (fastapi, uvicorn)")

RECIPE = """
name: serve_tiny
seed: 0
data:
  source: jsonl
  path: flowers.jsonl
  inputs:
    size: {from: size, steps: [{reshape: [2]}, {standardize: true}]}
    colour: {from: [red, blue], steps: [{scale: {divide: 255}}]}
    weight: {from: weight, steps: [{scale: {divide: 10}}]}
  targets: {species: {from: species}}
model:
  inputs: {size: {shape: [2]}, colour: {shape: [2]}, weight: {shape: [1]}}
  layers:
    - {name: joined, type: Concatenate, inputs: [size, colour, weight]}
    - {type: Dense, units: 8, activation: relu}
    - {name: species, type: Dense, units: 3, activation: softmax}
compile: {optimizer: {type: Adam, learning_rate: 0.05}, loss: sparse_categorical_crossentropy}
train: {epochs: 2, batch_size: 16, tensorboard: false}
"""

NAMES = ["iris", "lily", "rose"]


def _rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(3))
        out.append(
            {
                "size": [round(float(rng.normal(2 + 3 * k, 1)), 2), round(float(rng.normal(1 + k, 0.5)), 2)],
                "red": int(rng.integers(0, 256)),
                "blue": round(float(rng.uniform(0, 255)), 1),
                "weight": int(rng.integers(10, 50)),
                "species": NAMES[k],
            }
        )
    return out


def _write_jsonl(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.write_text("".join(json.dumps({c: r[c] for c in columns}) + "\n" for r in rows), encoding="utf-8")


FIELDS = ["size", "red", "blue", "weight"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A trained run and its app on a free 127.0.0.1 port: (run, url, app, tmp)."""
    from dlrun.verbs.serve import ServerThread, app_for_run

    tmp = tmp_path_factory.mktemp("serve")
    _write_jsonl(tmp / "flowers.jsonl", _rows(120, 0), [*FIELDS, "species"])
    run = api.train(api.load_recipe(write_recipe(tmp, RECIPE)), runs_root=tmp / "runs", quiet=True).run.path
    app = app_for_run(run, max_wait_ms=50)
    with ServerThread(app) as url:
        yield run, url, app, tmp


def _post(url: str, body: bytes | dict, path: str = "/predict") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=60) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_predictions_equal_dlrun_predict_on_the_same_rows(served):
    run, url, _, tmp = served
    rows = _rows(7, 1)
    _write_jsonl(tmp / "new.jsonl", rows, FIELDS)
    api.predict(run, tmp / "new.jsonl", output=tmp / "new.out.csv", overwrite=True)
    with (tmp / "new.out.csv").open(newline="") as fh:
        expected = list(csv.DictReader(fh))
    status, answer = _post(url, {"rows": [{k: r[k] for k in FIELDS} for r in rows]})
    assert status == 200
    got = answer["predictions"]
    assert len(got) == 7
    assert list(got[0]) == ["species", *(f"P(species={n})" for n in NAMES)]
    for g, e in zip(got, expected, strict=True):
        assert g["species"] == e["species"] and g["species"] in NAMES
        np.testing.assert_allclose(
            [g[f"P(species={n})"] for n in NAMES], [float(e[f"P(species={n})"]) for n in NAMES], rtol=1e-6
        )


def test_bad_or_missing_fields_are_4xx_naming_the_field(served):
    _, url, _, _ = served
    good = {"size": [2.0, 1.0], "red": 10, "blue": 20.5, "weight": 20}
    cases = [
        ({"rows": [{"size": [2.0, 1.0], "red": 10, "weight": 20}]}, 422, "blue"),  # missing
        ({"rows": [{**good, "blue": "wide"}]}, 422, "blue"),  # not a number
        ({"rows": [{**good, "size": 3}]}, 422, "size"),  # not an array
        ({"rows": [{**good, "colour": "red"}]}, 422, "colour"),  # not an input
        ({"rows": []}, 422, "rows"),
        ({"row": [good]}, 422, "rows"),
    ]
    for body, code, name in cases:
        status, answer = _post(url, body)
        assert status == code, (body, answer)
        locs = [d["loc"] for d in answer["detail"]]
        assert any(name in loc for loc in locs), (body, locs)
    status, answer = _post(url, b"{not json")
    assert status == 422
    # over the body limit: refused by its Content-Length, before the body is read
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(9 << 20))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "bytes" in json.loads(response.read())["detail"]
    conn.close()
    # a value the recipe's steps cannot take: 400 naming the field
    status, answer = _post(url, {"rows": [{**good, "size": [1.0, 2.0, 3.0]}]})
    assert status == 400 and answer["detail"].startswith("field 'size': ") and "reshape" in answer["detail"]


def test_health_and_openapi_list_the_input_fields(served):
    _, url, _, _ = served
    health = _get(url, "/health")
    assert health["status"] == "ok" and health["inputs"] == FIELDS
    assert health["outputs"] == {"species": "softmax"}
    spec = _get(url, "/openapi.json")
    assert "/predict" in spec["paths"] and "/health" in spec["paths"]
    row = spec["components"]["schemas"]["Row"]
    assert set(row["properties"]) == set(FIELDS) and set(row["required"]) == set(row["properties"])
    with urllib.request.urlopen(url + "/docs", timeout=30) as response:
        assert b"swagger" in response.read().lower()


def test_concurrent_requests_are_batched_into_one_model_call(served):
    _, url, app, _ = served
    batcher = app.app.state.batcher
    before = batcher.largest
    rows = _rows(16, 2)
    answers: list[tuple[int, dict]] = [None] * 16  # type: ignore[list-item]
    start = threading.Barrier(16)

    def client(i: int) -> None:
        start.wait()
        body = {"rows": [{k: rows[i][k] for k in FIELDS}]}
        answers[i] = _post(url, body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(status == 200 and len(a["predictions"]) == 1 for status, a in answers)
    assert batcher.largest > 1 and batcher.largest >= before
    assert _get(url, "/health")["largest_batch"] == batcher.largest
    # each request got its own row back: the same answers one by one
    for i in (0, 5, 15):
        alone = _post(url, {"rows": [{k: rows[i][k] for k in FIELDS}]})[1]
        assert alone["predictions"][0]["species"] == answers[i][1]["predictions"][0]["species"]
        np.testing.assert_allclose(
            alone["predictions"][0]["P(species=lily)"], answers[i][1]["predictions"][0]["P(species=lily)"], rtol=1e-5
        )


def test_a_changed_run_is_refused_before_serving(served, tmp_path):
    import shutil

    from dlrun.errors import RecipeError
    from dlrun.verbs.serve import app_for_run

    run, _, _, _ = served
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with (copy / "model.keras").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RecipeError, match=r"integrity|changed|sha256"):
        app_for_run(copy)
