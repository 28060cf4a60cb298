"""Semantic lint (dlrun/graph/lint.py) and `dlrun validate`'s all-errors report (dlrun/validation.py).

Each rule: the recipe that Keras trains wrongly gets one located warning naming the rule and the fix;
`--strict` makes it an error (exit 2); the corrected recipe gets none; `--explain RULE` explains it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dlrun.cli import main
from dlrun.errors import EXIT_USER
from dlrun.graph.lint import RULES

BASE = """\
name: toy
data:
  source: npz
  path: data.npz
  inputs:
    x: {from: x}
  targets:
    y:
      from: y
      steps: [{one_hot: 3}]
model:
  inputs:
    x: {shape: [4]}
  layers:
    - {name: hidden, type: Dense, units: 8, activation: relu}
    - {name: y, type: Dense, units: 3, activation: softmax}
compile:
  optimizer: adam
  loss: categorical_crossentropy
  metrics: [accuracy]
train:
  epochs: 5
"""


def run(tmp_path: Path, capsys, text: str, *args: str) -> tuple[int, list[str]]:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    code = main(["validate", str(path), *args])
    err = capsys.readouterr().err
    return code, [line.replace(str(path), "{file}") for line in err.splitlines()]


# (rule, change to BASE, expected location "line:column: key path", words of the message)
CASES = [
    (
        "from-logits-after-activation",
        ("loss: categorical_crossentropy", "loss: {type: CategoricalCrossentropy, from_logits: true}"),
        "19:54: compile.loss.from_logits",
        "output 'y' already applies softmax, and `from_logits: true` applies it again",
    ),
    (
        "sigmoid-with-categorical",
        ("units: 3, activation: softmax", "units: 3, activation: sigmoid"),
        "16:52: model.layers[1].activation",
        "output 'y' has sigmoid over 3 classes with categorical_crossentropy",
    ),
    (
        "target-encoding",
        ("loss: categorical_crossentropy", "loss: sparse_categorical_crossentropy"),
        "10:25: data.targets.y.steps[0].one_hot",
        "target 'y' is one-hot encoded but the loss is sparse_categorical_crossentropy, which takes integer labels",
    ),
    (
        "target-encoding",
        ("      steps: [{one_hot: 3}]", "      classes: [a, b, c]"),
        "9:7: data.targets.y",
        "target 'y' holds integer class labels but the loss is categorical_crossentropy, which takes one-hot rows",
    ),
    (
        "units-vs-classes",
        ("units: 3, activation: softmax", "units: 10, activation: softmax"),
        "16:37: model.layers[1].units",
        "output 'y' has 10 units but its target declares 3 classes (one_hot)",
    ),
    (
        "unknown-monitor",
        ("  epochs: 5\n", "  epochs: 5\n  callbacks: [{type: EarlyStopping, monitor: val_acc, patience: 2}]\n"),
        "23:46: train.callbacks[0].monitor",
        "EarlyStopping monitors 'val_acc', which this recipe never logs (did you mean 'val_accuracy'?)",
    ),
    (
        "patience-over-epochs",
        ("  epochs: 5\n", "  epochs: 5\n  callbacks: [{type: EarlyStopping, patience: 5}]\n"),
        "23:47: train.callbacks[0].patience",
        "EarlyStopping has patience 5 but runs for 5 epochs, so it never stops early",
    ),
]


def test_the_base_recipe_is_clean(tmp_path, capsys):
    code, lines = run(tmp_path, capsys, BASE, "--strict")
    assert code == 0 and lines == []


@pytest.mark.parametrize(
    ("rule", "change", "where", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_each_rule_warns_where_the_mistake_is(tmp_path, capsys, rule, change, where, message):
    text = BASE.replace(*change)
    assert text != BASE
    code, lines = run(tmp_path, capsys, text)
    assert code == 0
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"warning: {{file}}:{where}: {message}; fix: ")
    assert lines[0].endswith(f"[{rule}]")
    code, lines = run(tmp_path, capsys, text, "--strict")
    assert code == EXIT_USER
    assert len(lines) == 1 and lines[0].startswith(f"error: {{file}}:{where}: {message}; fix: ")


def test_frozen_backbone_with_random_weights(capsys):
    root = Path(__file__).resolve().parents[1]
    assert main(["validate", str(root / "recipes" / "flowers.yaml")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert ":36:65: model.layers[0].weights: 'backbone' is frozen with `weights: null`" in lines[0]
    assert "--set model.layers[0].weights=imagenet" in lines[0] and lines[0].endswith("[frozen-random-weights]")
    assert main(["validate", str(root / "recipes" / "flowers.yaml"), "--strict"]) == EXIT_USER


def test_monitor_names_follow_keras(tmp_path, capsys):
    """Keras logs a metric under the name it was given, classes under their snake-case name."""
    callbacks = "  callbacks: [{type: EarlyStopping, monitor: %s}]\n"
    for monitor, metrics in (("val_accuracy", "[accuracy]"), ("acc", "[acc]"), ("val_auc", "[AUC]"),
                             ("top", "[{type: TopKCategoricalAccuracy, name: top}]"), ("val_loss", "[]")):  # fmt: skip
        text = BASE.replace("metrics: [accuracy]", f"metrics: {metrics}").replace(
            "  epochs: 5\n", "  epochs: 5\n" + callbacks % monitor
        )
        assert run(tmp_path, capsys, text, "--strict") == (0, []), monitor


@pytest.mark.parametrize("rule", sorted(RULES))
def test_explain(capsys, rule):
    assert main(["validate", "--explain", rule]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{rule}: ") and len(out) > 200


def test_explain_unknown_rule(capsys):
    assert main(["validate", "--explain", "nope"]) == EXIT_USER
    assert "error: no lint rule 'nope'; rules: from-logits-after-activation" in capsys.readouterr().err


def test_every_independent_error_at_once_in_file_order(tmp_path, capsys):
    text = """\
    name: toy
    seed: -1
    model:
      inputs:
        x: {shape: [4]}
      layers:
        - {name: hidden, type: Dense, units: 8, activation: relux}
        - {name: h2, type: Dense, unit: 8}
        - {name: y, type: Dense, units: 0}
    compile:
      optimizer: adam
      loss: mse
    train:
      epochs: ten
    """
    code, lines = run(tmp_path, capsys, text)
    assert code == EXIT_USER
    assert lines == [
        "error: {file}:2:7: seed: must be at least 0, got -1",
        "error: {file}:7:57: model.layers[0].activation: unknown activation 'relux' (did you mean 'relu'?)",
        "error: {file}:8:31: model.layers[1].unit: Dense has no argument 'unit' (did you mean 'units'?)",
        "error: {file}:9:37: model.layers[2].units: expected a positive integer, got 0",
        "error: {file}:14:11: train.epochs: expected an integer, got 'ten'",
    ]
    # With a valid schema, node errors and the compile error are still all reported.
    fixed = textwrap.dedent(text).replace("seed: -1", "seed: 1").replace("epochs: ten", "epochs: 2")
    code, lines = run(tmp_path, capsys, fixed.replace("optimizer: adam", "optimizer: adamm"))
    assert code == EXIT_USER
    assert [line.split(": ")[2] for line in lines] == [
        "model.layers[0].activation", "model.layers[1].unit", "model.layers[2].units", "compile.optimizer",
    ]  # fmt: skip


def test_errors_are_capped(tmp_path, capsys):
    layers = "".join(f"    - {{name: d{i}, type: Dense, units: 0}}\n" for i in range(25))
    text = f"name: toy\nmodel:\n  inputs:\n    x: {{shape: [4]}}\n  layers:\n{layers}compile: {{loss: mse}}\n"
    code, lines = run(tmp_path, capsys, text)
    assert code == EXIT_USER
    assert len(lines) == 21
    assert lines[-1] == "error: ... and 5 more errors (fix these first)"
    assert lines[0].startswith("error: {file}:6:")
