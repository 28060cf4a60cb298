"""Editor = validate: the real yaml-language-server, driven over LSP with docs/recipe.schema.json.

One server for the module; each case opens a document and reads the diagnostics the server publishes.
A clean recipe gets none; each mistake validate reports gets one at the same place (0-based line and
character here, as LSP counts). Skips when `yaml-language-server` is not installed
(`npm install -g yaml-language-server`, as .ci/run does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dlrun import docs
from dlrun.validation import diagnose
from tests.conftest import RECIPES

SERVER = shutil.which("yaml-language-server")
pytestmark = pytest.mark.skipif(
    SERVER is None, reason="yaml-language-server is not installed (npm install -g yaml-language-server)"
)


class Client:
    """A minimal LSP client over stdio: requests, notifications, and published diagnostics by URI."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [SERVER, "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.next_id = 0
        self.responses: dict[int, Any] = {}
        self.diagnostics: dict[str, list[dict[str, Any]]] = {}
        self.published: dict[str, int] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.request("initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {}})
        self.notify("initialized", {})
        settings = {"yaml": {"validate": True, "hover": True, "completion": True, "schemaStore": {"enable": False}}}
        self.notify("workspace/didChangeConfiguration", {"settings": settings})

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            headers = {}
            while (line := out.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            if not headers:
                return
            message = json.loads(out.read(int(headers["content-length"])))
            with self.cond:
                if "id" in message and "method" in message:  # a request from the server: answer it
                    self._send({"jsonrpc": "2.0", "id": message["id"], "result": [{}] * 8})
                elif "id" in message:
                    self.responses[message["id"]] = message.get("result")
                elif message.get("method") == "textDocument/publishDiagnostics":
                    uri = message["params"]["uri"]
                    self.diagnostics[uri] = message["params"]["diagnostics"]
                    self.published[uri] = self.published.get(uri, 0) + 1
                self.cond.notify_all()

    def request(self, method: str, params: dict[str, Any], timeout: float = 30) -> Any:
        self.next_id += 1
        rid = self.next_id
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        with self.cond:
            assert self.cond.wait_for(lambda: rid in self.responses, timeout), f"no answer to {method}"
            return self.responses.pop(rid)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def open(self, path: Path, text: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Open a document; the diagnostics of its validation (the last publish once the server is quiet)."""
        uri = path.as_uri()
        self.notify(
            "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}}
        )
        with self.cond:
            assert self.cond.wait_for(lambda: uri in self.published, timeout), f"no diagnostics for {path}"
        count = -1
        while count != self.published[uri]:  # the server may validate again once the schema is loaded
            count = self.published[uri]
            time.sleep(0.15)
        return self.diagnostics[uri]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def lsp(tmp_path_factory):
    root = tmp_path_factory.mktemp("editor")
    client = Client(root)
    client.root = root  # type: ignore[attr-defined]
    yield client
    client.close()


HEADER = f"# yaml-language-server: $schema={docs.SCHEMA_FILE.as_uri()}\n"
GOOD = """\
name: toy
seed: 1
blocks:
  conv:
    params: {filters: 4}
    layers:
      - {type: Conv2D, filters: "${filters}", kernel_size: 3, padding: same}
model:
  inputs:
    x: {shape: [8, 8, 1]}
  layers:
    - {name: c, type: conv, filters: 8}
    - {type: Flatten}
    - {name: hidden, type: Dense, units: 8, activation: relu, kernel_regularizer: {type: L2, l2: 0.01}}
    - {name: y, type: Dense, units: 1}
compile:
  optimizer: adam
  loss: mse
"""


def diagnostics(lsp, name: str, text: str) -> list[tuple[int, int, str]]:
    """(line, column, message) of each diagnostic, 1-based as validate counts, for `text` saved as `name`."""
    path = lsp.root / f"{name}.yaml"
    path.write_text(HEADER + text, encoding="utf-8")
    found = lsp.open(path, HEADER + text)
    return [(d["range"]["start"]["line"] + 1, d["range"]["start"]["character"] + 1, d["message"]) for d in found]


def validate_errors(lsp, name: str) -> list[tuple[int, int]]:
    """Where `dlrun validate` puts its errors for the same file."""
    report = diagnose(lsp.root / f"{name}.yaml")
    return [(e.location.line, e.location.column) for e in report.errors if e.location is not None]


def test_a_clean_recipe_gets_no_diagnostics(lsp):
    assert diagnostics(lsp, "good", GOOD) == []
    assert validate_errors(lsp, "good") == []


@pytest.mark.parametrize("recipe", ["mnist", "flowers"])
def test_gallery_recipes_get_no_diagnostics(lsp, recipe):
    text = (RECIPES / f"{recipe}.yaml").read_text(encoding="utf-8")
    found = lsp.open(RECIPES / f"{recipe}.yaml", text)
    assert found == []


# (case, change to GOOD, words in the editor's message)
CASES = [
    ("activation", ("activation: relu,", "activation: relux,"), "Valid values"),
    ("block-padding", ("padding: same}", "padding: samee}"), "Valid values"),
    ("layer-type", ("type: Dense, units: 1}", "type: Dens, units: 1}"), ""),
    ("argument-name", ("type: Dense, units: 1}", "type: Dense, unit: 1}"), "unit"),
    ("units-range", ("units: 8,", "units: 0,"), "1"),
    ("units-too-large", ("units: 8,", "units: 1000000000000,"), "2147483647"),
    ("seed-range", ("seed: 1\n", "seed: -5\n"), "0"),
]


@pytest.mark.parametrize(("case", "change", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_mistake_gets_a_diagnostic_where_validate_puts_it(lsp, case, change, words):
    text = GOOD.replace(*change)
    assert text != GOOD
    found = diagnostics(lsp, case, text)
    expected = validate_errors(lsp, case)
    assert len(expected) == 1
    at = {(line, column): message for line, column, message in found}
    assert expected[0] in at, (expected, found)
    assert words in at[expected[0]]
    if case == "argument-name":  # flagged on the key, as validate does, besides the missing `units`
        assert "not allowed" in at[expected[0]], found


def test_a_child_recipe_with_extends_gets_no_false_errors(lsp):
    parent = lsp.root / "parent.yaml"
    parent.write_text(HEADER + GOOD, encoding="utf-8")
    child = "extends: parent.yaml\ntrain: {epochs: 3}\nmodel:\n  inputs:\n    x: {shape: [8, 8, 2]}\n"
    assert diagnostics(lsp, "child", child) == []
    # ... but still its own mistakes:
    assert diagnostics(lsp, "child_bad", child + "compile: {optimzer: adam}\n") != []


def test_hover_shows_the_catalog_docs(lsp):
    path = lsp.root / "hover.yaml"
    lsp.open(path, HEADER + GOOD)
    line = (HEADER + GOOD).splitlines().index("    - {name: hidden, type: Dense, units: 8, activation: relu, "
                                             "kernel_regularizer: {type: L2, l2: 0.01}}")  # fmt: skip
    hover = lsp.request("textDocument/hover", {"textDocument": {"uri": path.as_uri()},
                                               "position": {"line": line, "character": 28}})  # fmt: skip
    assert hover is not None and "densely-connected" in json.dumps(hover), hover
    hover = lsp.request("textDocument/hover", {"textDocument": {"uri": path.as_uri()},
                                               "position": {"line": line, "character": 35}})  # fmt: skip
    assert hover is not None and "dimensionality of the output space" in json.dumps(hover), hover
