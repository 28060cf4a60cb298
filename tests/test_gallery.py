"""The recipe gallery at hand: recipes/ ships in the package, `dlrun recipes` lists it, `init --template` copies."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch

import pytest

from dlrun import api, gallery, starter
from dlrun.cli import main
from dlrun.errors import RecipeError
from tests.conftest import RECIPES, ROOT


def test_the_package_ships_every_gallery_file():
    assert (ROOT / "dlrun" / "recipes").resolve() == RECIPES.resolve()  # the package's view of recipes/
    assert gallery.names() == sorted(p.stem for p in RECIPES.glob("*.yaml"))
    line = re.search(
        r"^\[tool.setuptools.package-data\]\ndlrun = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M
    )
    assert line is not None
    globs = json.loads(f"[{line[1]}]")
    shipped = [g.removeprefix("recipes/") for g in globs if g.startswith("recipes/")]
    left_out = [p.name for p in RECIPES.iterdir() if p.is_file() and not any(fnmatch(p.name, g) for g in shipped)]
    assert left_out == [], "add these to [tool.setuptools.package-data] or leave them out of recipes/"


def test_recipes_lists_the_gallery_with_what_each_shows(capsys):
    assert main(["recipes", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(listed) == gallery.names()
    assert listed["mnist"]["shows"].startswith("The seeds' first network (Chollet, ch. 2): MNIST digits with a")
    assert listed["alexnet"]["imports"] == ["custom_layers.py"]
    assert all(r["shows"] for r in listed.values()), "every gallery recipe starts with a comment saying what it shows"
    assert gallery.get("inception").summary.startswith("GoogLeNet's inception module (Szegedy et al. 2014;")
    assert max(len(r.summary) for r in gallery.all_recipes()) <= gallery.SUMMARY_CHARS + 2
    assert main(["recipes"]) == 0
    table = capsys.readouterr().out
    assert "resnet34" in table and "dlrun init --template NAME" in table


def test_init_copies_a_gallery_recipe_and_the_code_it_imports(tmp_path, capsys):
    target = tmp_path / "mine" / "alexnet.yaml"
    assert main(["init", "--template", "alexnet", "-o", str(target)]) == 0
    assert "wrote" in capsys.readouterr().err
    original = (RECIPES / "alexnet.yaml").read_text().splitlines()
    copied = target.read_text().splitlines()
    assert copied[1:] == original[1:] and copied[0].startswith("# yaml-language-server: $schema=")
    assert (target.parent / "custom_layers.py").read_bytes() == (RECIPES / "custom_layers.py").read_bytes()
    assert api.load_recipe(target).recipe.name == "alexnet"
    renamed = starter.render("resnet34", recipe_name="resnet")
    assert "\nname: resnet\n" in renamed


def test_init_refuses_before_writing_anything_and_suggests_names(tmp_path):
    target = tmp_path / "alexnet.yaml"
    target.write_text("mine\n")
    with pytest.raises(RecipeError, match="already exists"):
        starter.write("alexnet", target)
    assert not (tmp_path / "custom_layers.py").exists()
    with pytest.raises(RecipeError, match=r"unknown template 'resnet3' \(did you mean 'resnet34'\?\)"):
        starter.write("resnet3", tmp_path / "r.yaml")


def test_template_and_format_options_complete_their_choices(cli):
    def complete(words: str) -> list[str]:
        cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        env = {"_DLRUN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
        result = cli(env=env)
        assert result.code == 0, result.stderr
        return result.stdout.split()

    assert complete("dlrun init --template res") == ["resnet34"]
    assert complete("dlrun export runs/x --format t") == ["tflite"]


@pytest.mark.slow
def test_an_installed_wheel_lists_and_copies_the_gallery(tmp_path):
    """`pip install .` (not editable): the wheel holds the gallery as files, and `dlrun` finds it there."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("dlrun", "recipes"):  # dlrun/recipes stays the symlink a checkout has
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", tmp_path / "venv"], check=True)
    venv = tmp_path / "venv" / "bin"
    wheel = next((tmp_path / "dist").glob("dlrun-*.whl"))
    subprocess.run([venv / "python", "-m", "pip", "install", "-q", "--no-deps", wheel], check=True, env=env)
    work = tmp_path / "work"
    work.mkdir()

    def dlrun(*args: str) -> str:
        done = subprocess.run([venv / "dlrun", *args], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run([venv / "python", "-c", "import dlrun; print(dlrun.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(tmp_path / "venv") in where  # the wheel's copy, not the checkout
    assert [r["name"] for r in json.loads(dlrun("recipes", "--json"))] == gallery.names()
    dlrun("init", "--template", "resnet34", "-o", "resnet34.yaml")
    original = (RECIPES / "resnet34.yaml").read_text()
    assert (work / "resnet34.yaml").read_text().endswith(original.split("\n", 1)[1])  # schema comment adjusted
