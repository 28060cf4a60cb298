"""The CLI verbs as a user runs them: validate, show, summary, check, train (real data), eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RECIPES

MNIST = str(RECIPES / "mnist.yaml")


def test_validate_ok(cli):
    result = cli("validate", MNIST)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"{MNIST}: ok (2 nodes, outputs: digit)"


def test_validate_json(cli):
    result = cli("validate", MNIST, "--json")
    assert json.loads(result.stdout) == {
        "recipe": MNIST,
        "valid": True,
        "name": "mnist",
        "nodes": 2,
        "outputs": ["digit"],
    }


def test_show_prints_the_resolved_recipe_with_overrides(cli):
    result = cli("show", MNIST, "--set", "train.epochs=2", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["train"]["epochs"] == 2


def test_summary_lists_every_layer_and_totals(cli):
    result = cli("summary", MNIST, "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {r["name"]: r for r in data["layers"]}
    assert rows["hidden"]["params"] == 784 * 512 + 512
    assert rows["hidden"]["output_shape"] == "(None, 512)"
    assert rows["digit"]["inputs"] == ["hidden"]
    assert data["params"] == {"trainable": 407050, "non_trainable": 0, "total": 407050}
    table = cli("summary", MNIST)
    assert "hidden" in table.stdout and "total 407,050 params" in table.stdout


def test_summary_marks_shared_layers_and_nested_models(cli, tmp_path):
    from tests.test_build import NESTED, SHARED

    for text, expected in ((SHARED, "shared with lstm"), (NESTED, "nested model vision")):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(text)
        data = json.loads(cli("summary", str(recipe), "--json").stdout)
        marks = [m for row in data["layers"] for m in row["marks"]]
        assert expected in marks
        assert sum(r["params"] for r in data["layers"]) == data["params"]["total"]


def test_summary_of_a_node_sharing_an_op(cli, tmp_path):
    # `share` of an ops node calls the same keras.ops function: a row without weights (it was an internal error)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: shareop\nmodel:\n  inputs:\n    x: {shape: [4]}\n  layers:\n"
        "    - {name: a, type: ops.relu, inputs: [x]}\n    - {name: b, share: a, inputs: [a]}\n"
        "    - {name: out, type: Dense, units: 1, inputs: [b]}\ncompile: {optimizer: adam, loss: mse}\n"
    )
    result = cli("summary", str(recipe), "--json")
    assert result.code == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["layers"]}
    assert rows["b"]["params"] == 0 and rows["b"]["marks"] == ["shared with a"]
    assert rows["b"]["output_shape"] == "(None, 4)"


@pytest.mark.parametrize("fmt,needle", [("mermaid", "flowchart TD"), ("dot", "digraph")])
def test_summary_graph_formats_without_tensorflow(cli, fmt, needle):
    result = cli("summary", MNIST, "--format", fmt)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(needle)
    assert "hidden" in result.stdout


def test_check_runs_one_step(cli):
    result = cli("check", MNIST, "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 407050
    assert data["output_shapes"] == {"digit": [None, 10]}


@pytest.mark.slow
def test_train_then_eval_on_real_mnist(cli, shared_data, tmp_path):
    runs = tmp_path / "runs"
    result = cli(
        "train", MNIST, "--runs", str(runs), "--json",
        "--set", "data.limit=3000", "--set", "train.epochs=2",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    run = Path(out["run"])
    assert run.parent == runs / "mnist"
    assert out["metrics"]["accuracy"] > 0.8  # 3000 samples, 2 epochs: ~0.88
    for name in ("recipe.yaml", "run.json", "data.json", "history.csv", "history.json", "model.keras", "eval.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("*.tfevents.*"))  # TensorBoard logs by default
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 3
    assert json.loads((run / "data.json").read_text())["files"][0]["sha256"]

    evaluated = cli("eval", str(run), "--json")
    assert evaluated.code == 0, evaluated.stderr
    again = json.loads(evaluated.stdout)
    assert again["samples"] == 3000
    assert again["metrics"]["accuracy"] == pytest.approx(out["metrics"]["accuracy"], abs=1e-6)

    table = cli("eval", str(run))
    assert "accuracy" in table.stdout


def test_missing_recipe_is_a_user_error(cli, tmp_path):
    result = cli("validate", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert result.stderr.strip() == f"error: recipe file not found: {tmp_path / 'nope.yaml'}"


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.stdout.startswith("dlrun ")


@pytest.mark.slow
def test_mnist_recipe_reaches_stated_accuracy(cli, shared_data, tmp_path):
    """The seeds' MLP: at least 97.8% test accuracy on real MNIST (5 epochs, batch 128)."""
    result = cli("train", MNIST, "--runs", str(tmp_path / "runs"), "--json")
    assert result.code == 0, result.stderr
    accuracy = json.loads(result.stdout)["metrics"]["accuracy"]
    print(f"MNIST test accuracy: {accuracy:.4f}")
    assert accuracy >= 0.978


@pytest.mark.parametrize("args", [("eval",), ("validate", "--nope", "x"), ("frobnicate",)])
def test_usage_errors_exit_2_with_one_line(cli, args):
    result = cli(*args)
    assert result.code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
