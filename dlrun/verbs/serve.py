"""`dlrun serve RUN`: a finished run's model as an HTTP JSON API (FastAPI on uvicorn; the `serve` extra).

- `POST /predict` takes `{"rows": [{<field>: value, ...}, ...]}`: one object per sample, keyed by the raw
  columns/keys the recipe's `data.inputs` read (their `from` names), exactly like a line of a JSON-lines file
  given to `dlrun predict`. The rows go through `predict`'s own code path (`prepare_table`: the recipe's
  steps with the run's saved statistics, then `Predictor`: the model, probabilities, original units), and
  the answer is `{"predictions": [...]}`, one object per row with `dlrun predict`'s CSV columns: per
  classifier output its class name and `P(<output>=<class>)` probabilities; per regression output its
  value(s) in the target's original units.
- The request body is validated by a pydantic model built from the recipe (`request_model`): a field per
  raw column, typed text / number / array of numbers by what the model input takes; a missing, extra or
  mistyped field is a 422 naming it (`loc`), a value the recipe's steps cannot take (a wrong array shape) a
  400 naming the input. Bodies over `max_body` bytes get 413, requests over `max_rows` rows 422.
- `GET /health` says the run is loaded, with the batcher's counts; `/docs` and `/openapi.json` are FastAPI's.
- Concurrent requests are gathered into one model call (`dlrun.verbs.batcher.Batcher`).

A run folder is untrusted: the model is loaded the way `predict` loads it (integrity.json checked, safe
mode, the run's custom code imported only with `trust`). The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import RecipeError
from dlrun.verbs.batcher import MAX_BATCH, MAX_WAIT_MS, Batcher, Rows
from dlrun.verbs.predict import Predictor, load_predictor, to_flat_records

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel
    from starlette.types import ASGIApp

MAX_BODY_BYTES = 8 << 20  # 8 MiB: a few thousand table rows; a larger body is refused (413) before it is read
MAX_ROWS = 1024  # rows in one request


def _requires_server() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise RecipeError("dlrun serve needs FastAPI and uvicorn: pip install 'dlrun[serve]'") from None


# ----------------------------------------------------------------------------------------------------
# the request, from the recipe


@dataclass(frozen=True)
class Field:
    """One raw field of a request row: the column it is, the model input it feeds, and its JSON type."""

    name: str
    input: str
    kind: str  # "text" | "number" | "array"
    nullable: bool


def request_fields(predictor: Predictor) -> list[Field]:
    """A field per raw column the model's inputs read, typed by what the input takes after the recipe's steps:
    text for string inputs, a number for one value per sample (several columns stacked: one number each), an
    array of numbers otherwise. `fill` inputs accept null (a missing value the model fills)."""
    spec = predictor.data
    if spec.source == "images":
        raise RecipeError(
            "this run reads an image folder; dlrun serve takes table and array inputs as JSON (use dlrun predict "
            "for image files)"
        )
    fields: list[Field] = []
    for name, tensor in zip(predictor.names, predictor.model.inputs, strict=True):
        feature = spec.inputs[name]
        columns = feature.columns
        one_hot = math.prod(s.one_hot for s in feature.steps if s.one_hot)
        size = math.prod(d or 1 for d in tuple(tensor.shape)[1:]) // max(one_hot, 1)
        if feature.dtype == "string" or str(tensor.dtype) == "string":
            kind = "text"
        elif len(columns) > 1 or size <= 1:
            kind = "number"
        else:
            kind = "array"
        fields += [Field(c, name, kind, feature.fill is not None) for c in columns]
    return fields


# JSON arrays of numbers up to four levels deep (an image is three)
Numbers = list[float] | list[list[float]] | list[list[list[float]]] | list[list[list[list[float]]]]


def request_model(fields: list[Field], max_rows: int = MAX_ROWS) -> type[BaseModel]:
    """The pydantic model of a request body: `{"rows": [Row, ...]}` with 1..max_rows rows; `Row` has one
    required field per raw column (by its column name, as an alias: any name is allowed) and no others."""
    from pydantic import ConfigDict, create_model
    from pydantic import Field as PydanticField

    types: dict[str, Any] = {"text": str, "number": int | float, "array": Numbers}
    row_fields: dict[str, Any] = {}
    for i, f in enumerate(fields):
        kind = types[f.kind] | None if f.nullable else types[f.kind]
        row_fields[f"f{i}"] = (kind, PydanticField(alias=f.name, description=f"raw value for model input {f.input!r}"))
    row = create_model("Row", __config__=ConfigDict(extra="forbid"), **row_fields)
    rows = (list[row], PydanticField(min_length=1, max_length=max_rows, description="One object per sample."))
    return create_model("PredictRequest", __config__=ConfigDict(extra="forbid"), rows=rows)


def predict_rows(predictor: Predictor, fields: list[Field], rows: Rows) -> Rows:
    """Request rows -> prepared inputs (`predict`'s steps) -> the model -> one flat answer per row."""
    from dlrun.data.tables import ArrayTable, _json_array
    from dlrun.verbs.predict_input import prepare_table

    columns = {f.name: _json_array(f.name, [r[f.name] for r in rows], "the request") for f in fields}
    table = ArrayTable(columns, "the request")
    arrays = prepare_table(table, predictor.data, predictor.names, predictor.fitted, "the request")
    parts = [predictor.run(arrays, "the request", one_call=True)]
    return to_flat_records(predictor.finish(parts, "row", list(range(len(rows)))))


def _bad_values(exc: RecipeError, fields: list[Field]) -> str:
    """A step's error with the request fields of the input it names (its key path: data.inputs.<name>...)."""
    path = exc.path
    name = path[2] if len(path) > 2 and path[:2] == ("data", "inputs") else None
    if name is None:  # predict's own checks say "input 'x': ..."
        name = next((f.input for f in fields if exc.message.startswith(f"input {f.input!r}")), None)
    names = [f.name for f in fields if f.input == name]
    return f"field {', '.join(map(repr, names))}: {exc.message}" if names else exc.message


# ----------------------------------------------------------------------------------------------------
# the app


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, by its Content-Length before anything is
    read, or (chunked) as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        import json

        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def make_app(
    predictor: Predictor,
    *,
    run_name: str = "",
    max_batch: int = MAX_BATCH,
    max_wait_ms: float = MAX_WAIT_MS,
    max_rows: int = MAX_ROWS,
    max_body: int = MAX_BODY_BYTES,
) -> FastAPI | BodyLimit:
    """The FastAPI app serving `predictor` (see the module docstring); `app.state.batcher` is its `Batcher`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException

    _requires_server()
    fields = request_fields(predictor)
    request = request_model(fields, max_rows)
    batcher = Batcher(lambda rows: predict_rows(predictor, fields, rows), max_batch, max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title=f"dlrun serve {run_name}".strip(),
        description="Predictions from a dlrun run: POST raw rows to /predict (the recipe's own input names).",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    async def predict(body: Any) -> dict[str, Any]:
        rows = [r.model_dump(by_alias=True) for r in body.rows]
        try:
            return {"predictions": await batcher.submit(rows)}
        except RecipeError as exc:
            raise HTTPException(status_code=400, detail=_bad_values(exc, fields)) from None

    predict.__annotations__["body"] = request  # the model built above (this module's annotations are strings)
    app.post("/predict", summary="Predict on raw rows")(predict)

    @app.get("/health", summary="The run is loaded; batching counts")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "run": run_name,
            "inputs": [f.name for f in fields],
            "outputs": predictor.kinds,
            "batches": batcher.batches,
            "requests": batcher.requests,
            "largest_batch": batcher.largest,
        }

    return BodyLimit(app, max_body) if max_body else app


def app_for_run(
    run_path: Path,
    *,
    trust: bool = False,
    unsafe: bool = False,
    max_batch: int = MAX_BATCH,
    max_wait_ms: float = MAX_WAIT_MS,
) -> FastAPI | BodyLimit:
    """Load the run as `predict` does (integrity checked; custom code only with `trust`) and build its app."""
    _requires_server()
    if max_batch < 1:
        raise RecipeError(f"--max-batch must be at least 1, not {max_batch}")
    if max_wait_ms < 0:
        raise RecipeError(f"--max-wait-ms cannot be negative ({max_wait_ms})")
    predictor = load_predictor(Path(run_path), trust=trust, unsafe=unsafe)
    return make_app(predictor, run_name=str(run_path), max_batch=max_batch, max_wait_ms=max_wait_ms)


def serve_run(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run `app` with uvicorn until interrupted (Ctrl-C)."""
    import uvicorn

    if not 0 <= port <= 65535:
        raise RecipeError(f"--port must be 0..65535, not {port}")
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=1024, timeout_graceful_shutdown=5)


class ServerThread:
    """`with ServerThread(app) as url:` uvicorn in a background thread on a free 127.0.0.1 port (tests, the
    load benchmark); stopped on leaving the block."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
