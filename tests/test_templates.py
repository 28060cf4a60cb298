"""`dlrun init`: every starter template passes `dlrun check` as written; files are never overwritten."""

from __future__ import annotations

import json

import pytest
import yaml

from dlrun import api, docs, starter
from dlrun.errors import RecipeError

# The MobileNetV2 backbone takes ~40 s of CPU to build and trace one training step: `make test-all` runs it.
CHECKED = [pytest.param(n, marks=[pytest.mark.slow] if n == "transfer" else []) for n in starter.TEMPLATES]


@pytest.mark.parametrize("name", CHECKED)
def test_every_template_passes_check(tmp_path, name):
    path = starter.write(name, tmp_path / f"{name}.yaml")
    report = api.check(api.load_recipe(path))
    assert report["params"] > 0
    assert path.read_text(encoding="utf-8").count("\n# ") + path.read_text(encoding="utf-8").count("  # ") >= 5, (
        "templates are commented"
    )


@pytest.mark.parametrize("name", starter.TEMPLATES)
def test_every_template_matches_the_editor_schema(name):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(docs.SCHEMA_FILE.read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(starter.template_text(name))))
    assert [e.message for e in errors] == []


def test_init_refuses_to_overwrite(cli, tmp_path):
    target = tmp_path / "recipe.yaml"
    first = cli("init", "--template", "cnn", "--output", str(target))
    assert first.code == 0, first.stderr
    assert "dlrun check" in first.stderr
    before = target.read_text(encoding="utf-8")
    second = cli("init", "--template", "mlp", "--output", str(target))
    assert second.code == 2
    assert second.stderr.strip() == f"error: {target} already exists; choose another --output or remove it first"
    assert target.read_text(encoding="utf-8") == before


def test_init_writes_the_schema_line_for_where_the_file_goes(tmp_path):
    inside = docs.ROOT / "recipes" / "x.yaml"
    assert starter.render("mlp", inside).startswith("# yaml-language-server: $schema=../docs/recipe.schema.json\n")
    outside = starter.render("mlp", tmp_path / "r.yaml").splitlines()[0]
    assert outside == f"# yaml-language-server: $schema={docs.SCHEMA_FILE.as_uri()}"
    assert "yaml-language-server: $schema=" not in starter.render("mlp", None).splitlines()[0]


def test_init_to_stdout_with_a_name(cli):
    result = cli("init", "-t", "text", "-o", "-", "--name", "reviews")
    assert result.code == 0, result.stderr
    assert yaml.safe_load(result.stdout)["name"] == "reviews"


def test_unknown_template_and_bad_name_are_user_errors(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown template 'rnn' \(did you mean 'cnn'\?\); templates: mlp, cnn"):
        starter.write("rnn", tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="--name '9lives'"):
        starter.render("mlp", recipe_name="9lives")
