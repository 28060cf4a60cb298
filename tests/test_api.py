"""The Python API for notebooks: the same errors as the CLI (one line, same text), and a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dlrun
from dlrun.cli import main
from dlrun.errors import RecipeError
from tests.conftest import ROOT, write_recipe

GOOD = """
name: api_test
model:
  inputs: {x: {shape: [4]}}
  layers:
    - {name: h, type: Dense, units: 8, activation: relu}
    - {name: y, type: Dense, units: 1}
compile: {optimizer: adam, loss: mse}
"""

BAD_SCHEMA = GOOD.replace("units: 8", "units: eight")
BAD_BUILD = """
name: api_test
model:
  inputs: {a: {shape: [4]}, b: {shape: [3]}}
  layers:
    - {name: s, type: Add, inputs: [a, b]}
compile: {loss: mse}
"""


def _cli_error(capsys, *argv: str) -> str:
    """The one line the CLI prints for a user error (in-process: same code path as the `dlrun` command)."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _api_error(call, *args, **kwargs) -> str:
    with pytest.raises(RecipeError) as info:
        call(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return f"error: {text}"


def test_a_schema_error_reads_the_same_from_the_api_and_the_cli(tmp_path, capsys):
    path = str(write_recipe(tmp_path, BAD_SCHEMA))
    api_line = _api_error(dlrun.load_recipe, path)
    assert "model.layers[0].units" in api_line
    assert _cli_error(capsys, "validate", path) == api_line
    assert _api_error(dlrun.build_model, path) == api_line
    assert _api_error(dlrun.train, path) == api_line


def test_a_build_error_reads_the_same_from_the_api_and_the_cli(tmp_path, capsys):
    path = str(write_recipe(tmp_path, BAD_BUILD))
    api_line = _api_error(dlrun.build_model, path)
    assert "'s'" in api_line and "(None, 4)" in api_line
    assert _cli_error(capsys, "summary", path) == api_line


def test_override_train_and_evaluate_errors_read_the_same(tmp_path, capsys):
    path = str(write_recipe(tmp_path, GOOD))
    api_line = _api_error(dlrun.load_recipe, path, overrides=["model.layers[7].units=3"])
    assert _cli_error(capsys, "validate", path, "--set", "model.layers[7].units=3") == api_line
    no_data = _api_error(dlrun.train, path)
    assert "no `data` section" in no_data
    assert _cli_error(capsys, "train", path, "--runs", str(tmp_path / "runs")) == no_data
    not_a_run = tmp_path / "nothing"
    not_a_run.mkdir()
    eval_line = _api_error(dlrun.evaluate, not_a_run)
    assert _cli_error(capsys, "eval", str(not_a_run)) == eval_line


def test_the_subprocess_cli_prints_the_api_message(tmp_path, cli):
    path = str(write_recipe(tmp_path, BAD_SCHEMA))
    result = cli("validate", path)
    assert result.code == 2
    assert result.stderr.strip() == _api_error(dlrun.load_recipe, path)


def test_the_api_builds_a_model_from_a_path_or_a_loaded_recipe(tmp_path):
    path = write_recipe(tmp_path, GOOD)
    loaded = dlrun.load_recipe(path, overrides=["model.layers[0].units=16"])
    assert dlrun.build_model(loaded).count_params() == 4 * 16 + 16 + 16 + 1
    assert dlrun.build_model(path).count_params() == 4 * 8 + 8 + 8 + 1


def test_import_dlrun_and_loading_a_recipe_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import dlrun\n"
        "for name in ('load_recipe', 'build_model', 'train', 'evaluate'):\n"
        "    assert callable(getattr(dlrun, name)), name\n"
        "dlrun.load_recipe('recipes/mnist.yaml')\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'jax', 'torch'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_api_names_stay_functions_after_the_engine_and_verbs_are_imported():
    import dlrun.engine.session
    import dlrun.verbs.evaluate

    assert callable(dlrun.train) and dlrun.train.__module__ == "dlrun.api"
    assert callable(dlrun.evaluate) and dlrun.evaluate.__module__ == "dlrun.api"


def test_train_takes_paths_written_as_strings(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
name: api_paths
data: {source: sklearn, name: wine, inputs: {x: {from: x}}, targets: {y: {from: y}}}
model:
  inputs: {x: {shape: [13]}}
  layers: [{name: y, type: Dense, units: 3, activation: softmax}]
compile: {loss: sparse_categorical_crossentropy}
train: {epochs: 1}
""",
    )
    runs = tmp_path / "runs"
    result = dlrun.train(str(recipe), runs_root=str(runs), run_id="first", quiet=True)
    assert result.run.path == runs.resolve() / "api_paths" / "first"
    assert (result.run.path / "model.keras").is_file()
