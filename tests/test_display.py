"""The live display and the pictures: `dlrun train` in a pseudo-terminal (exact step counter, ETA, status before
TensorFlow, closing summary), one plain line per epoch when piped, the run folder's plots read back by content,
`dlrun plot` (PNG and SVG), `summary --plot` checked before any model is built, dot/Mermaid marks."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from dlrun.cli import main
from tests.conftest import ROOT, write_recipe

TRAIN, TEST, BATCH, STEPS_PER_EXECUTION, EPOCHS = 1200, 300, 25, 10, 2
STEPS = -(-int(TRAIN * 0.8) // BATCH)  # 960 after the validation split: 39 steps; Keras reports 10, 20, 30, 40
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

RECIPE = f"""
name: tiny
seed: 0
data:
  source: npz
  path: tiny.npz
  validation_split: 0.2
  inputs:
    x: {{from: x}}
  targets:
    y: {{from: y}}
model:
  inputs:
    x: {{shape: [8]}}
  layers:
    - {{name: hidden, type: Dense, units: 16, activation: relu}}
    - {{name: y, type: Dense, units: 3, activation: softmax}}
compile:
  optimizer: adam
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
  steps_per_execution: {STEPS_PER_EXECUTION}
train:
  epochs: {EPOCHS}
  batch_size: {BATCH}
"""


def _tiny(folder: Path, steps_per_execution: int = STEPS_PER_EXECUTION) -> Path:
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 8)).astype("float32")
        x[:, 0] += 1.5 * y
        return x, y

    (xt, yt), (xs, ys) = split(TRAIN), split(TEST)
    np.savez(folder / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    text = RECIPE.replace(f"steps_per_execution: {STEPS_PER_EXECUTION}", f"steps_per_execution: {steps_per_execution}")
    return write_recipe(folder, text)


def _in_pty(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, list[tuple[float, str]]]:
    """Run ARGS with stdin/stdout/stderr on a 150x40 pseudo-terminal; (exit code, [(seconds, text read)])."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    start = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[tuple[float, str]] = []
    try:
        while time.monotonic() - start < timeout:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append((time.monotonic() - start, data.decode("utf-8", "replace")))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), chunks


def _screen_lines(text: str) -> list[str]:
    """Every line the terminal showed, escape codes removed (each redraw starts at a carriage return)."""
    return [line.strip() for line in re.split(r"[\r\n]+", ANSI.sub("", text)) if line.strip()]


@pytest.fixture(scope="module")
def tty_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tty")
    recipe = _tiny(folder)
    code, chunks = _in_pty([sys.executable, "-m", "dlrun", "train", str(recipe), "--runs", "runs"], folder)
    text = "".join(c for _, c in chunks)
    assert code == 0, ANSI.sub("", text)[-3000:]
    runs = list((folder / "runs" / "tiny").iterdir())
    return chunks, _screen_lines(text), runs[0]


@pytest.mark.slow  # a fresh interpreter in a pseudo-terminal: TensorFlow's import, ~10 s
def test_terminal_counter_ends_at_the_step_count_with_eta(tty_run):
    _, lines, _ = tty_run
    live = re.compile(r"\b(\d+)/(\d+) · (?:ETA|[\d,]+ steps/s)")
    counters = [(int(a), int(b)) for line in lines for a, b in live.findall(line)]
    assert counters, lines[-30:]
    # Keras reports the chunk ending at step 40 (10 steps per call) in a 39-step epoch: the counter is clamped.
    assert all(done <= total == STEPS for done, total in counters), counters
    assert counters[-1] == (STEPS, STEPS)
    live = [line for line in lines if re.search(r"epoch \d/\d .*ETA \d+:\d\d", line)]
    assert live, "no ETA shown"
    assert any("steps/s" in line and "samples/s" in line for line in live)
    finals = [line for line in lines if line.startswith(f"epoch {EPOCHS}/{EPOCHS} · {STEPS}/{STEPS} steps")]
    assert finals, "each finished epoch leaves its line"


@pytest.mark.slow  # a fresh interpreter in a pseudo-terminal: TensorFlow's import, ~10 s
def test_terminal_status_comes_before_tensorflow_and_a_summary_ends_the_run(tty_run):
    chunks, lines, run = tty_run
    first_status = next(t for t, c in chunks if "reading the recipe" in c or "loading TensorFlow" in c)
    first_epoch = next(t for t, c in chunks if "epoch 1/" in c)
    assert first_status < first_epoch
    assert first_status < 10, f"first status after {first_status:.1f}s"  # ~1 s on an idle machine
    joined = "\n".join(lines)
    assert joined.index("loading TensorFlow") < joined.index("run folder:")
    assert "reading data: 1 file" in joined
    assert re.search(r"best epoch \d/2: val_loss \d", joined)
    assert re.search(r"done in \d+:\d\d · model: .*model.keras", joined)
    assert f"plots: {run.resolve() / 'learning_curves.png'}" in joined.replace(str(run), str(run.resolve()))


def test_meter_clamps_keras_chunk_ends_to_the_step_count():
    from dlrun.engine.display import EpochMeter

    meter = EpochMeter(epochs=2, steps=None, batch_size=BATCH, quiet=True, show=False)
    meter.begin_epoch(0, STEPS)
    seen = []
    for last_step in (9, 19, 29, 39):  # what Keras passes to on_train_batch_end with steps_per_execution 10
        time.sleep(0.01)
        meter.batch_end(last_step, {"loss": 0.5})
        seen.append(meter.figures({"loss": 0.5}))
    assert [f.split(" · ")[0] for f in seen] == ["10/39", "20/39", "30/39", "39/39"]
    assert re.search(r"[\d,]+ steps/s · [\d,]+ samples/s · ETA 0:00 · run 0:0\d · loss 0.5000$", seen[2])
    assert meter.end_epoch({"loss": 0.5}).startswith("epoch 1/2 · 39/39 steps · ")
    streamed = EpochMeter(epochs=1, steps=None, batch_size=BATCH, quiet=True, show=False)
    streamed.begin_epoch(0, None)  # a stream of unknown length: the count is learnt at the epoch's end
    streamed.batch_end(9, {})
    assert streamed.figures({}).startswith("10/? · ")
    streamed.batch_end(12, {})
    assert streamed.end_epoch({}).startswith("epoch 1/1 · 13/13 steps")


def _png(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)


@pytest.mark.slow  # a fresh interpreter in a pseudo-terminal: TensorFlow's import, ~10 s
def test_train_writes_learning_curves_and_confusion_matrix(tty_run):
    _, _, run = tty_run
    curves, confusion = _png(run / "learning_curves.png"), _png(run / "confusion_y.png")
    assert curves.shape[1] > 600 and curves.shape[0] > 250  # two panels (accuracy, loss) side by side
    for image in (curves, confusion):
        ink = (image[..., :3] < 0.9).any(axis=-1).mean()
        assert 0.02 < ink < 0.6, ink  # drawn on, not blank (nor solid)
    # the matrix cells are Blues: some strongly blue pixels
    assert ((confusion[..., 2] - confusion[..., 0]) > 0.3).mean() > 0.02


def test_piped_output_is_one_plain_line_per_epoch(tmp_path, capsys):
    recipe = _tiny(tmp_path, steps_per_execution=7)
    assert main(["train", str(recipe), "--runs", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [e.split(" · ")[:2] for e in epochs] == [[f"epoch {i}/{EPOCHS}", f"{STEPS}/{STEPS} steps"] for i in (1, 2)]
    assert "loading TensorFlow" not in err  # transient statuses are for terminals only
    assert "best epoch" in err and "plots: " in err


def _fake_run(folder: Path, losses: list[float]) -> Path:
    import json

    folder.mkdir(parents=True)
    history = {
        "epoch": list(range(1, len(losses) + 1)),
        "loss": losses,
        "val_loss": [v * 1.1 for v in losses],
        "accuracy": [1 - v for v in losses],
    }
    (folder / "history.json").write_text(json.dumps(history), encoding="utf-8")
    return folder


def test_plot_overlays_runs_as_png_and_svg(tmp_path, capsys):
    a = _fake_run(tmp_path / "runs" / "m" / "run-a", [0.9, 0.5, 0.3, 0.2])
    b = _fake_run(tmp_path / "runs" / "m" / "run-b", [0.8, 0.7, 0.6])
    png, svg = tmp_path / "cmp.png", tmp_path / "cmp.svg"
    assert main(["plot", str(a), str(b), "--out", str(png)]) == 0
    assert str(png) in capsys.readouterr().out
    image = _png(png)
    assert image.shape[1] > 600  # a panel per metric: accuracy and loss
    assert 0.02 < (image[..., :3] < 0.9).any(axis=-1).mean() < 0.6
    assert main(["plot", str(a), str(b), "--out", str(svg), "--metric", "loss"]) == 0
    root = ET.parse(svg).getroot()
    width, height = (float(root.get(k).removesuffix("pt")) for k in ("width", "height"))
    assert [float(v) for v in root.get("viewBox").split()] == [0, 0, width, height]
    text = svg.read_text(encoding="utf-8")
    for label in ("m/run-a loss", "m/run-a val_loss", "m/run-b loss", "m/run-b val_loss"):
        assert label in text  # the legend names each run's curves
    assert "accuracy" not in text  # --metric loss: one panel
    curves = {g.get("id"): g for g in root.iter() if g.get("id", "").startswith("curve-")}
    assert set(curves) == {"curve-1-loss", "curve-1-val_loss", "curve-2-loss", "curve-2-val_loss"}
    for gid, epochs in (("curve-1-loss", 4), ("curve-2-val_loss", 3)):
        path = next(e for e in curves[gid].iter() if e.tag.endswith("}path"))
        assert path.get("d").count("L") == epochs - 1  # a point per epoch


def _zlib_level(png: Path) -> int:
    """The FLEVEL field of a PNG's first IDAT zlib header: 0 fastest, 1 fast, 2 default (6), 3 maximum."""
    import struct

    data, at = png.read_bytes(), 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            return data[at + 9] >> 6
        at += 12 + length
    raise AssertionError(f"{png}: no IDAT chunk")


def test_plot_writes_png_with_fast_compression(tmp_path, capsys):
    """PNG pictures are compressed at zlib level 3, not PIL's default 6 (~3x the CPU for ~20 % smaller files)."""
    run = _fake_run(tmp_path / "r", [0.9, 0.5, 0.3])
    png = tmp_path / "curves.png"
    assert main(["plot", str(run), "--out", str(png)]) == 0
    assert _zlib_level(png) == 1  # zlib levels 2-5
    assert _png(png).shape[1] > 300  # still a picture PIL reads


def test_plot_refuses_bad_input_in_one_line(tmp_path, capsys):
    run = _fake_run(tmp_path / "r", [0.5, 0.4])
    assert main(["plot", str(run), "--out", str(tmp_path / "x.jpg")]) == 2
    assert main(["plot", str(run), "--metric", "f1", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["plot", str(tmp_path / "none"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "--out writes .png or .svg" in err and "--metric 'f1'" in err and "not a run folder" in err
    assert not (tmp_path / "x.png").exists()


def test_summary_plot_checks_pydot_and_graphviz_before_building(tmp_path, capsys, monkeypatch):
    from dlrun import api

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the tools were checked")

    monkeypatch.setattr(api, "build", no_build)
    recipe = _tiny(tmp_path)
    try:  # imported first: monkeypatch then puts this module back (a fresh one would miss its cached submodules)
        import pydot
    except ImportError:
        pydot = None
    monkeypatch.setitem(sys.modules, "pydot", None)  # `import pydot` fails as if not installed
    assert main(["summary", str(recipe), "--plot", str(tmp_path / "m.svg")]) == 2
    if pydot is None:
        pytest.skip("the plot extra (pydot) is not installed")
    monkeypatch.setitem(sys.modules, "pydot", pydot)
    monkeypatch.setenv("PATH", str(tmp_path))  # no graphviz `dot` on it
    assert main(["summary", str(recipe), "--plot", str(tmp_path / "m.svg")]) == 2
    assert main(["summary", str(recipe), "--plot", str(tmp_path / "m.jpg")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: --plot needs pydot: pip install 'dlrun[plot]'; `--format dot|mermaid` draws")
    assert err[1].startswith("error: --plot needs Graphviz's `dot` program: apt-get install graphviz")
    assert err[2].startswith("error: --plot writes .png, .svg, .pdf, .dot")
    assert len(err) == 3 and not list(tmp_path.glob("m.*"))


def test_summary_plot_svg_is_not_cropped(tmp_path, capsys):
    import shutil

    pytest.importorskip("pydot", reason="the plot extra (pydot) is not installed")
    if shutil.which("dot") is None:
        pytest.skip("graphviz is not installed (apt-get install graphviz)")
    recipe = _tiny(tmp_path)
    svg, png = tmp_path / "m.svg", tmp_path / "m.png"
    assert main(["summary", str(recipe), "--plot", str(svg)]) == 0
    assert main(["summary", str(recipe), "--plot", str(png)]) == 0
    root = ET.parse(svg).getroot()
    width, height = (float(root.get(k).removesuffix("pt")) for k in ("width", "height"))
    # Keras' 200 dpi made graphviz write width 1156pt over a 416-unit viewBox: the picture showed cropped
    assert [float(v) for v in root.get("viewBox").split()] == [0, 0, width, height]
    text = svg.read_text(encoding="utf-8")
    assert "hidden" in text and "Dense" in text and "(None, 16)" in text
    image = _png(png)
    assert image.shape[0] > 300 and 0.01 < (image[..., :3] < 0.9).any(axis=-1).mean() < 0.6


SHARED_SUBMODEL = """
name: towers
model:
  submodels:
    tower:
      inputs: {t: {shape: [4]}}
      layers:
        - {name: d, type: Dense, units: 2}
  inputs: {a: {shape: [4]}, b: {shape: [4]}}
  layers:
    - {name: left, type: tower, inputs: a}
    - {name: right, type: tower, inputs: b}
    - {name: out, type: Concatenate, inputs: [left, right]}
compile: {optimizer: adam, loss: mse}
"""


def test_dot_and_mermaid_mark_shared_layers_and_known_shapes(tmp_path, capsys):
    siamese = str(ROOT / "recipes" / "siamese_lstm.yaml")
    assert main(["summary", siamese, "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert '"left" [shape=ellipse, label="left\\nInput\\n(None, None, 128)"];' in dot
    assert '"right_lstm" [label="right_lstm\\nLSTM (shares left_lstm)", style="dashed"];' in dot
    assert '"left_lstm" -> "right_lstm" [style=dotted, arrowhead=none, constraint=false, label="shared"];' in dot
    assert 'label="similar\\nOutput\\n(None, 1)"' in dot  # from expect.output_shapes
    pydot = pytest.importorskip("pydot", reason="the plot extra (pydot) is not installed")
    (graph,) = pydot.graph_from_dot_data(dot)  # well-formed dot
    assert len(graph.get_edges()) == 7
    assert main(["summary", siamese, "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert 'n_left(["left: Input (None, None, 128)"])' in mermaid
    assert 'n_right_lstm["right_lstm: LSTM (shares left_lstm)"]' in mermaid
    assert "n_left_lstm -.-|shared| n_right_lstm" in mermaid
    recipe = write_recipe(tmp_path, SHARED_SUBMODEL)
    assert main(["summary", str(recipe), "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert 'n_right["right: tower (shares left)"]' in mermaid and 'n_left["left: tower"]' in mermaid


def test_verbs_show_loading_tensorflow_on_a_terminal_while_it_loads(monkeypatch):
    """eval, predict, summary, export... (every verb that loads TensorFlow) show `loading TensorFlow` before the
    import starts, from the one hook where TensorFlow loads (quiet_tensorflow.before_load, set by the CLI); gone
    once it has loaded. train's display, already showing its own status, is left alone."""
    import contextlib
    import types

    from dlrun import quiet_tensorflow
    from dlrun.cli import main
    from dlrun.engine import display

    monkeypatch.setattr(quiet_tensorflow, "_BEFORE_LOAD", [])
    assert main(["--version"]) == 0
    assert display.loading_tensorflow in quiet_tensorflow._BEFORE_LOAD
    order: list[str] = []

    class TensorFlowLoader:
        def exec_module(self, module):
            order.append("tensorflow loads")

    monkeypatch.setattr(quiet_tensorflow, "silenced_fd2", contextlib.nullcontext)  # pytest holds fd 2
    monkeypatch.setattr(display, "live", lambda: True)
    monkeypatch.setattr(display, "status", lambda message, quiet=False: order.append(message))
    monkeypatch.setattr(display, "stop", lambda: order.append("status gone"))
    monkeypatch.setattr(quiet_tensorflow, "_announced", False)
    quiet_tensorflow._QuietLoader(TensorFlowLoader()).exec_module(types.ModuleType("tensorflow"))
    assert order == ["loading TensorFlow", "tensorflow loads", "status gone"]
    # the verbs import Keras with fd 2 silenced (backend.quiet_native_startup): the status comes before that
    from dlrun.backend import quiet_native_startup

    order.clear()
    monkeypatch.setattr(quiet_tensorflow, "_announced", False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(
        quiet_tensorflow, "silenced_fd2", lambda: contextlib.nullcontext(order.append("stderr silenced"))
    )
    with quiet_native_startup():
        TensorFlowLoader().exec_module(None)
    assert order == ["loading TensorFlow", "stderr silenced", "tensorflow loads", "status gone"]
    monkeypatch.setattr(display._screen, "progress", object())  # train's display is up: its status stands
    assert display.loading_tensorflow() is None
