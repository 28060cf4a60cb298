"""Every mistake in tests/bad_recipes/ gives exactly one located error line, exit code 2, no traceback.

Each file holds one mistake and states its exact error in its first line:

    # expect: {file}:9:14: model.layers[1].units: expected an integer, got 'ten'

`{file}` stands for the path passed on the command line (`tests/bad_recipes/<name>.yaml`, run from the
repository root). `{...}` stands for a list the schema generates and keeps growing (the keys "allowed here",
the "known" data sources); everything before it is matched exactly. A second line `# verb: summary` picks the verb for mistakes that only Keras finds while
building (shapes); all others use `validate`, which never imports TensorFlow.

Most cases run in-process through `dlrun.cli.main` (fast); a handful run through the real subprocess.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlrun.cli import main
from dlrun.errors import EXIT_USER

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_recipes"
CASES = sorted(BAD.glob("*.yaml"))
LOCATED = re.compile(r"^\{file\}:\d+:\d+: ")


def _case(path: Path) -> tuple[str, str, str]:
    """(relative path, verb, expected error line without the `error: ` prefix)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines and lines[0].startswith("# expect: "), f"{path.name}: first line must be `# expect: ...`"
    verb = "validate"
    if len(lines) > 1 and lines[1].startswith("# verb: "):
        verb = lines[1].split()[2]
    rel = path.relative_to(ROOT).as_posix()
    expected = lines[0][len("# expect: ") :].replace("{file}", rel)
    return rel, verb, expected


def matches(line: str, expected: str) -> bool:
    """`line` is `expected`, where `{...}` in `expected` stands for any non-empty text."""
    pattern = ".+".join(re.escape(part) for part in expected.split("{...}"))
    return re.fullmatch(pattern, line) is not None


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_the_folder_covers_many_mistakes():
    assert len(CASES) >= 70
    static = [p for p in CASES if _case(p)[1] == "validate"]
    assert len(static) >= 70


@pytest.mark.parametrize("path", CASES, ids=_ids(CASES))
def test_expectation_is_a_located_line(path):
    """Every expectation names file:line:column, so every mistake is found where it was made."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert LOCATED.match(first[len("# expect: ") :]), first


@pytest.mark.parametrize("path", CASES, ids=_ids(CASES))
def test_bad_recipe_in_process(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")
    rel, verb, expected = _case(path)
    code = main([verb, rel])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code == EXIT_USER, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert errors[0] == captured.err.strip().splitlines()[-1]
    assert matches(errors[0], f"error: {expected}"), f"\n got: {errors[0]}\nwant: error: {expected}"
    assert captured.out == ""


SUBPROCESS = [
    "yaml_python_object_apply",
    "yaml_tab_indent",
    "unknown_top_key",
    "layer_type_typo",
    "ref_cycle",
    "type_jit_compile",
    "build_add_shape_mismatch",
]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_recipe_through_the_real_cli(cli, name):
    rel, verb, expected = _case(BAD / f"{name}.yaml")
    result = cli(verb, rel, cwd=ROOT, timeout=120)
    assert "Traceback" not in result.stderr
    assert result.code == EXIT_USER, result.stderr
    lines = result.stderr.strip().splitlines()
    if verb == "validate":
        assert len(lines) == 1  # nothing else: TensorFlow is never loaded
    assert matches(lines[-1], f"error: {expected}"), f"\n got: {lines[-1]}\nwant: error: {expected}"
    assert sum(line.startswith("error:") for line in lines) == 1
    assert result.stdout == ""


HOSTILE = sorted(p for p in CASES if p.stem.startswith(("expression_", "callback_", "interpolation_", "yaml_")))


def test_hostile_cases_stay_under_five_seconds_and_500_mb(tmp_path):
    """The hostile cases in one fresh process capped at 500 MB of address space: each under 5 s, exit 2."""
    import json
    import subprocess
    import sys

    script = f"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (500 * 1024 * 1024, 500 * 1024 * 1024))
from dlrun.cli import main
out = {{}}
for rel in {[p.relative_to(ROOT).as_posix() for p in HOSTILE]!r}:
    started = time.process_time()
    code = main(["validate", rel])
    out[rel] = (code, time.process_time() - started)
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(HOSTILE) >= 20
    for rel, (code, seconds) in results.items():
        assert code == EXIT_USER, rel
        assert seconds < 5, f"{rel} took {seconds:.1f} s"
