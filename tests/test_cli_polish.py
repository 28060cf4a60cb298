"""CLI polish: shell completion, --version, --json on the read verbs, no escape codes with NO_COLOR, --quiet."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import typer.main

from dlrun.cli import app
from tests.conftest import RECIPES

ESC = "\x1b["


def test_completion_is_installable_and_completes_verbs(cli):
    helped = cli("--help")
    assert "--install-completion" in helped.stdout and "--show-completion" in helped.stdout
    # Without shell detection (which depends on the parent process: `make` runs tests under sh), the shell is named.
    script = cli("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.code == 0 and "_DLRUN_COMPLETE=complete_bash" in script.stdout
    completed = cli(env={"_DLRUN_COMPLETE": "complete_bash", "COMP_WORDS": "dlrun ej", "COMP_CWORD": "1"})
    assert completed.code == 0
    assert completed.stdout.split() == ["eject"]


def test_version(cli):
    result = cli("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"dlrun {version('dlrun')}"


READ_VERBS = {"validate", "show", "summary", "check", "eval", "import", "eject", "runs", "compare"}


@pytest.mark.parametrize("verb", sorted(READ_VERBS))
def test_read_verbs_offer_json(verb):
    command = typer.main.get_command(app).commands.get(verb)
    if command is None:
        pytest.skip(f"no `{verb}` command here")
    assert "--json" in {opt for p in command.params for opt in p.opts}


def test_json_output_is_plain_json(cli):
    result = cli("eject", str(RECIPES / "mnist.yaml"), "--json", env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert result.code == 0, result.stderr
    assert ESC not in result.stdout  # machine output is never coloured, even on a (forced) terminal
    assert json.loads(result.stdout)["code"].startswith('"""mnist')


def _run_folder(tmp_path):
    run = tmp_path / "runs" / "demo" / "20260101-000000"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: demo\n", encoding="utf-8")
    return tmp_path / "runs"


def test_no_color_means_no_escape_codes_even_on_a_forced_terminal(cli, tmp_path):
    root = _run_folder(tmp_path)
    styled = cli("runs", str(root), env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert styled.code == 0, styled.stderr
    assert ESC in styled.stdout, "the forced terminal is styled (else this test proves nothing)"
    plain = cli("runs", str(root), env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.code == 0, plain.stderr
    assert ESC not in plain.stdout + plain.stderr
    assert "demo" in plain.stdout


def test_not_a_terminal_means_no_escape_codes(cli, tmp_path):
    root = _run_folder(tmp_path)
    piped = cli("runs", str(root), env={"NO_COLOR": ""})
    assert piped.code == 0
    assert ESC not in piped.stdout + piped.stderr


def test_quiet_silences_status_lines(cli, tmp_path):
    loud = cli("init", "-o", str(tmp_path / "a.yaml"))
    quiet = cli("init", "-o", str(tmp_path / "b.yaml"), "--quiet")
    assert loud.code == quiet.code == 0
    assert "wrote" in loud.stderr
    assert "wrote" not in quiet.stderr
