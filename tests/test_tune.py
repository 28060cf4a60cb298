"""`search:` and `dlrun tune`: the space's checks, a real search on digits, resume, refusals, trial states."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from dlrun import api
from dlrun.errors import RecipeError
from dlrun.verbs.tune.study import load_space, run_study
from tests.conftest import write_digits as _write_digits
from tests.conftest import write_recipe

optuna = pytest.importorskip("optuna")

RECIPE = """
name: digits
seed: 0
data:
  source: npz
  path: digits.npz
  inputs: {pixels: {from: x}}
  targets: {digit: {from: y, steps: [{one_hot: 10}]}}
  validation_split: 0.25
model:
  inputs: {pixels: {shape: [64]}}
  layers:
    - {name: hidden, type: Dense, units: 16, activation: relu}
    - {name: digit, type: Dense, units: 10, activation: softmax}
compile:
  optimizer: adam
  loss: categorical_crossentropy
  metrics: [accuracy]
  jit_compile: false
train: {epochs: 3, batch_size: 32}
search:
  space:
    compile.optimizer.learning_rate: {float: [1.0e-4, 3.0e-2], log: true}
    model.layers[0].units: {choice: [2, 8, 32]}
  objective: {metric: val_accuracy, direction: max}
  trials: 4
  sampler: random
  pruner: none
"""


def write_digits(folder, n_train=600, n_test=300):
    """sklearn's digits as digits.npz in `folder` (see conftest.write_digits)."""
    return _write_digits(folder, n_train, n_test, seed=0)


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory):
    """One study on digits, run as two sessions: 2 trials, then resumed to 4."""
    folder = tmp_path_factory.mktemp("tune")
    write_digits(folder)
    recipe = write_recipe(folder, RECIPE)
    study_dir = folder / "study"
    first = run_study(recipe, trials=2, study_dir=study_dir, quiet=True)
    before = {
        row["trial"]: (row, (study_dir / row["run"] / "history.json").read_text(), (study_dir / row["run"]).stat())
        for row in first.rows
    }
    second = run_study(recipe, trials=4, study_dir=study_dir, quiet=True)
    return {"recipe": recipe, "dir": study_dir, "first": first, "before": before, "second": second}


# ----------------------------------------------------------------------------------------------------
# a real search


@pytest.mark.slow
def test_search_finds_a_configuration_better_than_the_worst(digits_study):
    result = digits_study["second"]
    scores = [r["val_accuracy"] for r in result.rows if r["state"] == "complete"]
    assert len(scores) == 4
    assert result.best["val_accuracy"] == max(scores)
    assert max(scores) > min(scores) + 0.05  # width and learning rate matter on digits
    assert result.rows[0] is result.best and result.best["rank"] == 1


@pytest.mark.slow
def test_leaderboard_and_best_recipe_are_written(digits_study):
    folder, result = digits_study["dir"], digits_study["second"]
    table = json.loads((folder / "leaderboard.json").read_text())
    assert [r["trial"] for r in table["trials"]] == [r["trial"] for r in result.rows]
    lines = (folder / "leaderboard.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["rank", "trial", "state", "val_accuracy"]
    assert len(lines) == 5
    best = folder / "best.yaml"
    loaded = api.load_recipe(best)  # validates
    assert loaded.recipe.search is None and "search" not in best.read_text().split("# replay")[1]
    assert loaded.recipe.compile.optimizer.kwargs["learning_rate"] == result.best["compile.optimizer.learning_rate"]
    assert loaded.recipe.model.layers[0].kwargs["units"] == result.best["model.layers[0].units"]


@pytest.mark.slow
def test_each_trial_is_an_ordinary_run_folder(digits_study):
    folder, result = digits_study["dir"], digits_study["second"]
    for row in result.rows:
        run = folder / row["run"]
        assert run.parent.parent.parent == folder / "trials" and run.parent.name == "digits"
        assert {"recipe.yaml", "model.keras", "history.json", "eval.json"} <= {p.name for p in run.iterdir()}
        replay = api.load_recipe(run / "recipe.yaml")  # the user's recipe plus the values, no search, no reporter
        assert replay.recipe.search is None
        assert replay.recipe.name == "digits"
        assert [c.type for c in replay.recipe.train.callbacks] == []
        overrides = json.loads((run / "run.json").read_text())["overrides"]
        assert any(o.startswith("model.layers[0].units=") for o in overrides)


@pytest.mark.slow
def test_resume_continues_where_it_stopped(digits_study):
    first, second, before = digits_study["first"], digits_study["second"], digits_study["before"]
    assert first.ran == 2 and len(first.rows) == 2
    assert second.ran == 2 and sorted(r["trial"] for r in second.rows) == [0, 1, 2, 3]
    for row in second.rows:
        if row["trial"] in before:
            old, history, stat = before[row["trial"]]
            assert row == {**old, "rank": row["rank"]}  # same values, score, run folder
            run = digits_study["dir"] / row["run"]
            assert (run / "history.json").read_text() == history
            assert run.stat().st_mtime == stat.st_mtime
    # the resumed session drew new values, not the first session's again
    values = [(r["compile.optimizer.learning_rate"], r["model.layers[0].units"]) for r in second.rows]
    assert len(set(values)) == 4
    # asking for no more than the study holds trains nothing
    again = run_study(digits_study["recipe"], trials=3, study_dir=digits_study["dir"], quiet=True)
    assert again.ran == 0 and len(again.rows) == 4


def test_changed_space_is_refused(digits_study, tmp_path):
    recipe = digits_study["recipe"]
    changed = write_recipe(
        recipe.parent, recipe.read_text().replace("{choice: [2, 8, 32]}", "{choice: [2, 8, 64]}"), "changed.yaml"
    )
    with pytest.raises(RecipeError, match=r"search space changed .*model\.layers\[0\]\.units changed"):
        run_study(changed, trials=5, study_dir=digits_study["dir"], quiet=True)
    objective = write_recipe(
        recipe.parent, recipe.read_text().replace("metric: val_accuracy", "metric: val_loss"), "objective.yaml"
    )
    with pytest.raises(RecipeError, match="objective changed"):
        run_study(objective, trials=5, study_dir=digits_study["dir"], quiet=True)
    assert len(json.loads((digits_study["dir"] / "leaderboard.json").read_text())["trials"]) == 4


# ----------------------------------------------------------------------------------------------------
# failed and pruned trials are recorded


def _small(tmp_path, space: str, extra: str = "", epochs: int = 2) -> object:
    write_digits(tmp_path, n_train=200, n_test=50)
    text = RECIPE.split("search:")[0] + f"search:\n  space:\n{space}\n  objective: {{metric: val_accuracy}}\n{extra}"
    return write_recipe(tmp_path, text.replace("epochs: 3", f"epochs: {epochs}"))


def test_failed_trial_is_recorded_and_the_study_goes_on(tmp_path):
    recipe = _small(tmp_path, "    compile.optimizer.learning_rate: {choice: [1.0e+30]}", "  pruner: none\n", epochs=1)
    with pytest.raises(RecipeError, match=r"no trial completed; the first failure: .*loss became"):
        run_study(recipe, trials=2, study_dir=tmp_path / "s", quiet=True)
    rows = json.loads((tmp_path / "s" / "leaderboard.json").read_text())["trials"]
    assert [r["state"] for r in rows] == ["failed", "failed"]
    assert all("loss became" in r["error"] and r["run"] for r in rows)


def test_pruned_trial_is_recorded(tmp_path, monkeypatch):
    from dlrun.verbs.tune import study as study_module

    monkeypatch.setattr(study_module, "_pruner", lambda spec, base: optuna.pruners.ThresholdPruner(lower=1.1))
    recipe = _small(tmp_path, "    model.layers[0].units: {choice: [4]}")
    result = run_study(recipe, trials=1, study_dir=tmp_path / "s", quiet=True)
    (row,) = result.rows
    assert row["state"] == "pruned" and row["epochs"] == 1 and row["val_accuracy"] is not None
    assert result.best is None and not (tmp_path / "s" / "best.yaml").exists()
    study = optuna.load_study(
        study_name="dlrun",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "study.journal"))
        ),
    )
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED and study.trials[0].intermediate_values


@pytest.mark.slow
def test_unlogged_objective_metric_is_a_located_error(tmp_path):
    recipe = _small(tmp_path, "    model.layers[0].units: {choice: [4]}", epochs=1)
    recipe.write_text(recipe.read_text().replace("metric: val_accuracy", "metric: val_acuracy, direction: max"))
    with pytest.raises(RecipeError, match=r"search\.objective\.metric: .*'val_acuracy' .*did you mean 'val_accuracy'"):
        run_study(recipe, trials=1, study_dir=tmp_path / "s", quiet=True)


# ----------------------------------------------------------------------------------------------------
# the search section's checks (no training)


def _space_error(tmp_path, space: str, objective: str = "{metric: val_accuracy}") -> str:
    text = RECIPE.split("search:")[0] + f"search:\n  space:\n{space}\n  objective: {objective}\n"
    recipe = write_recipe(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_space(recipe)
    return str(info.value)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            "    compile.optimizer.learnig_rate: {float: [0.001, 0.1]}",
            r"recipe\.yaml:\d+:\d+: search\.space\.compile\.optimizer\.learnig_rate: "
            r"Adam has no argument 'learnig_rate' \(did you mean 'learning_rate'\?\)$",
        ),
        (
            "    model.layer[0].units: {choice: [8, 16]}",
            r"search\.space\.model\.layer\[0\]\.units: 'model\.layer\[0\]\.units' is not in the recipe: model has "
            r"no 'layer' \(did you mean 'layers'\?\)",
        ),
        ("    model.layers[5].units: {choice: [8, 16]}", r"model\.layers has 2 items, no \[5\]"),
        ("    train.epoch: {int: [1, 3]}", r"train has no 'epoch' \(did you mean 'epochs'\?\)"),
        (
            "    model.layers[0].units: {choice: [8, ten]}",
            r"units: expected an integer, got 'ten'$",
        ),
        ("    train.batch_size: {choice: [32, 0]}", r"train\.batch_size: must be at least 1, got 0$"),
        (
            "    model.layers[0].type: {choice: [Dense, Conv2D]}",
            r"with model\.layers\[0\]\.type = Conv2D the recipe is invalid: model\.layers\[0\]\.units: Conv2D has no",
        ),
        ("    compile.optimizer.learning_rate: {float: [0, 0.1], log: true}", r"a log range needs low > 0"),
        ("    train.epochs: {int: [5, 1]}", r"low end 5 is above its high end 1"),
        ("    train.epochs: {int: [1, 5], choice: [1]}", r"exactly one of: choice, int, float \(got choice, int\)"),
        ("    train.epochs: {integer: [1, 5]}", r"unknown key 'integer'.*allowed here: choice, float, int, log"),
        ("    search.trials: {int: [1, 5]}", r"the `search` section itself cannot be searched"),
        (
            "    compile.optimizer.momentum: {float: [0.0, 0.9], when: {compile.optimizer.type: SGD}}",
            r"`when` refers to 'compile\.optimizer\.type', which is not an earlier search key",
        ),
        (
            "    compile.optimizer.type: {choice: [Adam, RMSprop]}\n"
            "    compile.optimizer.momentum: {float: [0.0, 0.9], when: {compile.optimizer.type: SGD}}",
            r"`when` can never hold: compile\.optimizer\.type is one of Adam, RMSprop",
        ),
    ],
)
def test_space_errors_are_located_at_the_search_key(tmp_path, space, expected):
    message = _space_error(tmp_path, space)
    assert "search." in message
    assert re.search(expected, message), message


def test_objective_direction_must_be_known(tmp_path):
    message = _space_error(tmp_path, "    train.epochs: {int: [1, 2]}", "{metric: val_top5}")
    assert "cannot tell whether 'val_top5' is better high or low" in message


def test_conditional_space_and_shorthand_expansion(tmp_path):
    text = RECIPE.split("search:")[0] + (
        "search:\n  space:\n"
        "    compile.optimizer.type: {choice: [Adam, SGD]}\n"
        "    compile.optimizer.momentum: {float: [0.0, 0.9], when: {compile.optimizer.type: SGD}}\n"
        "    compile.optimizer.learning_rate: {float: [1.0e-3, 1.0e-1], log: true}\n"
        "    model.layers[0]: {choice: [{name: hidden, type: Dense, units: 8}, {name: hidden, type: Dense, units: 4}]}\n"
        "  objective: {metric: val_loss}\n"
    )
    _, space = load_space(write_recipe(tmp_path, text))
    assert space.prelude == ['compile.optimizer={"type": "adam"}']  # `optimizer: adam` is {type: adam}
    assert space.spec.objective.goal == "minimize"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = space.suggest(trial)
        assert ("compile.optimizer.momentum" in values) == (values["compile.optimizer.type"] == "SGD")
        assert values["model.layers[0]"]["units"] in (4, 8)
        overrides = space.overrides(values)
        assert overrides[0] == 'compile.optimizer={"type": "adam"}'
        loaded = api.load_recipe(tmp_path / "recipe.yaml", overrides)
        assert loaded.recipe.compile.optimizer.type == values["compile.optimizer.type"]
        seen.add(values["compile.optimizer.type"])
        study.tell(trial, 1.0)
    assert seen == {"Adam", "SGD"}
    assert space.fingerprint() == load_space(tmp_path / "recipe.yaml")[1].fingerprint()


def test_cli_tune_check_and_errors(tmp_path, cli):
    recipe = write_recipe(tmp_path, RECIPE)
    ok = cli("tune", str(recipe), "--check")
    assert ok.code == 0, ok.stderr
    assert "search ok (2 parameters" in ok.stdout
    bad = write_recipe(tmp_path, RECIPE.replace("model.layers[0].units", "model.layers[0].unit"), "bad.yaml")
    result = cli("tune", str(bad), "--check")
    assert result.code == 2
    assert f"{bad}:24:5: search.space.model.layers[0].unit: Dense has no argument 'unit'" in result.stderr
    none = write_recipe(tmp_path, RECIPE.split("search:")[0], "plain.yaml")
    assert "has no `search:` section" in cli("tune", str(none)).stderr


@pytest.mark.slow
def test_cli_tune_prints_the_leaderboard(tmp_path, cli):
    write_digits(tmp_path, n_train=300, n_test=100)
    recipe = write_recipe(tmp_path, RECIPE)
    result = cli("tune", str(recipe), "--trials", "2", "--study-dir", str(tmp_path / "s"))
    assert result.code == 0, result.stderr
    assert "val_accuracy (maximize)" in result.stdout and "best: trial" in result.stdout
    assert "trial 1 (2/2): complete" in result.stderr
    data = json.loads(cli("tune", str(recipe), "--trials", "2", "--study-dir", str(tmp_path / "s"), "--json").stdout)
    assert data["ran"] == 0 and len(data["trials"]) == 2
    shutil.rmtree(tmp_path / "s")
