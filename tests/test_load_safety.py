"""Hostile or broken recipe files are refused quickly, with one located line, and nothing runs or is written.

Each case goes through the real `dlrun` process (`validate` and `train`), in an empty working folder, with
`--runs` pointing into tmp_path: afterwards no runs folder exists and the working folder is still empty.
"""

from __future__ import annotations

import itertools
import resource
import time
from pathlib import Path

import pytest

from dlrun.errors import RecipeError
from dlrun.recipe.load import MAX_BYTES, load_file, load_text

MODEL = """\
model:
  inputs:
    x: {shape: [4]}
  layers:
    - {name: y, type: Dense, units: 1}
compile:
  loss: mse
"""


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghi"
    for prev, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "name: bomb\n" + "\n".join(lines) + "\n" + MODEL


def write_bytes(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


CASES = {
    "python_object_apply": (
        b'name: !!python/object/apply:os.system ["touch PWNED"]\n' + MODEL.encode(),
        ":1:7: name: YAML tag '!!python/object/apply:os.system' is not allowed in a recipe (plain values only)",
    ),
    "python_object_new": (
        b"name: bad\nmodel: !!python/object/new:os.system [touch PWNED]\ncompile: {loss: mse}\n",
        ":2:8: model: YAML tag '!!python/object/new:os.system' is not allowed in a recipe (plain values only)",
    ),
    "python_object_mapping": (
        b"name: bad\ntrain: !!python/object:subprocess.Popen {args: [touch, PWNED]}\n" + MODEL.encode(),
        ":2:8: train: YAML tag '!!python/object:subprocess.Popen' is not allowed in a recipe (plain values only)",
    ),
    "python_name": (
        b"name: bad\nseed: !!python/name:os.system\n" + MODEL.encode(),
        ":2:7: seed: YAML tag '!!python/name:os.system' is not allowed in a recipe (plain values only)",
    ),
    "billion_laughs": (
        billion_laughs().encode(),
        ":7:4: f: document expands to more than 200000 nodes (an alias/anchor bomb?); refused",
    ),
    "deep_nesting": (
        b"name: deep\ndescription: " + b"[" * 200_000 + b"]" * 200_000 + b"\n",
        ":2:114: recipe nests more than 100 levels deep; refused",
    ),
    "not_utf8": (
        b"name: bad\ndescription: caf\xe9\n" + MODEL.encode(),
        ":2:17: recipe is not valid UTF-8 (byte 0xe9 at offset 26); save it as UTF-8",
    ),
    "utf16": (
        "name: bad\n".encode("utf-16"),
        ":1:1: recipe is not valid UTF-8 (byte 0xff at offset 0); save it as UTF-8",
    ),
    "duplicate_keys": (
        b"name: one\n" + MODEL.encode() + b"name: two\n",
        ":9:1: name: duplicate key 'name' (first defined at line 1)",
    ),
    "nul_byte": (
        b"name: bad\x00\n" + MODEL.encode(),
        ":1:10: invalid YAML: character U+0000 is not allowed in YAML text",
    ),
}


@pytest.mark.parametrize("verb", ["validate", "train"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_quickly_with_nothing_written(cli, tmp_path, case, verb):
    data, tail = CASES[case]
    recipe = write_bytes(tmp_path / "in", f"{case}.yaml", data)
    work = tmp_path / "work"
    work.mkdir()
    runs = tmp_path / "runs"
    args = [verb, str(recipe)] + (["--runs", str(runs)] if verb == "train" else [])
    started = _children_cpu()
    result = cli(*args, cwd=work, timeout=60)
    spent = _children_cpu() - started
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {recipe}{tail}"
    assert not runs.exists()
    assert list(work.iterdir()) == []  # no PWNED file, no runs/, no logs
    assert spent < 2.0 + _startup(cli)


_STARTUP: list[float] = []


def _children_cpu() -> float:
    """CPU seconds (user + system) spent so far by this process's finished children: unlike wall time, the
    same on a busy machine (the tests may run beside others)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _startup(cli) -> float:
    """CPU seconds the interpreter and `dlrun` take to start here (the machine may be slow)."""
    if not _STARTUP:
        started = _children_cpu()
        cli("--version", timeout=60)
        _STARTUP.append(_children_cpu() - started)
    return _STARTUP[0]


def test_fifty_megabyte_recipe_is_refused_unread(cli, tmp_path):
    recipe = tmp_path / "huge.yaml"
    with recipe.open("wb") as f:
        f.write(b"name: huge\ndescription: '")
        f.truncate(50 * 1024 * 1024)  # a 50 MB file without spending 50 MB of disk writes
    work = tmp_path / "work"
    work.mkdir()
    started = _children_cpu()
    result = cli("train", str(recipe), "--runs", str(tmp_path / "runs"), cwd=work, timeout=60)
    spent = _children_cpu() - started
    assert result.code == 2
    assert result.stderr.strip() == f"error: {recipe}: recipe is 52.4 MB, larger than the 5 MB limit; refused"
    assert not (tmp_path / "runs").exists()
    assert list(work.iterdir()) == []
    assert spent < 2.0 + _startup(cli)


def test_size_limit_also_applies_to_text(tmp_path):
    with pytest.raises(RecipeError, match="larger than 5 MB"):
        load_text("#" * (MAX_BYTES + 1), "big.yaml")


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match=r"is a directory, not a recipe file"):
        load_file(tmp_path)
    with pytest.raises(RecipeError, match=r"recipe file not found: .*nope\.yaml"):
        load_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system [touch PWNED]\n",
        "a: !!python/object/apply:os.system {args: [touch PWNED]}\n",
        "a: !!python/object/new:os.system [touch PWNED]\n",
        "a: !!python/module:os\n",
        "a: !!python/name:os.system\n",
        "a: !!python/tuple [1, 2]\n",
        "a: !!binary aGVsbG8=\n",
        "a: !!set {x, y}\n",
        "a: !!omap [{x: 1}]\n",
        "a: !!pairs [{x: 1}]\n",
        "a: !custom 1\n",
        "a: !<tag:example.com,2000:x> 1\n",
        "? !!python/name:os.system\n: 1\n",
        "a: [1, !!python/object/apply:os.system [touch PWNED]]\n",
        "base: &b !!python/object/apply:os.system [touch PWNED]\nuse: *b\n",
    ],
)
def test_no_tag_constructs_anything(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"(is not allowed|is not supported) in a recipe") as info:
        load_text(text, "r.yaml")
    assert info.value.location is not None and info.value.location.line is not None
    assert list(tmp_path.iterdir()) == []


def test_alias_to_a_plain_value_is_fine():
    doc = load_text("a: &n 3\nb: *n\nc: &m {x: 1}\nd: *m\n", "r.yaml")
    assert doc.data == {"a": 3, "b": 3, "c": {"x": 1}, "d": {"x": 1}}


def test_merge_key_bomb_is_refused_quickly():
    lines = ["a: &a {k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7, k8: 8, k9: 9}"]
    prev = "a"
    for i in range(1, 12):
        lines.append(f"l{i}: &l{i} {{<<: [" + ", ".join([f"*{prev}"] * 10) + "]}")
        prev = f"l{i}"
    started = time.process_time()
    with pytest.raises(RecipeError, match=r"an alias/anchor bomb"):
        load_text("\n".join(lines) + "\n", "r.yaml")
    assert time.process_time() - started < 2.0


def test_bad_merge_value_is_located():
    with pytest.raises(RecipeError) as info:
        load_text("a: {x: 1}\nb: {<<: 5}\n", "r.yaml")
    assert str(info.value) == (
        "r.yaml:2:9: b: invalid merge key `<<`: expected a mapping or list of mappings for merging, but found scalar"
    )


# ----------------------------------------------------------------------------------------------------
# regular files only: FIFOs and devices refused at once, the size cap on the bytes read


@pytest.fixture
def alarm():
    """Fail (instead of hanging the suite) when a read blocks: a FIFO with no writer blocks forever."""
    import signal

    def expired(signum, frame):
        raise TimeoutError("blocked on a special file")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_dev_zero_is_refused_at_once(cli):
    started = _children_cpu()
    result = cli("validate", "/dev/zero", timeout=60)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: /dev/zero is a character device, not a recipe file; refused"
    assert _children_cpu() - started < 2.0 + _startup(cli)


def test_fifo_recipe_is_refused_at_once(tmp_path, alarm, capsys):
    import os

    from dlrun.cli import main

    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    assert main(["validate", str(fifo)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {fifo} is a FIFO (named pipe), not a recipe file; refused"


def test_fifo_extends_is_refused(tmp_path, alarm):
    import os

    os.mkfifo(tmp_path / "base.yaml")
    recipe = write_bytes(tmp_path, "r.yaml", b"extends: base.yaml\n" + MODEL.encode())
    with pytest.raises(RecipeError, match=r"r.yaml:1:10: extends: extended recipe not found: .*base.yaml"):
        from dlrun.loading import load_recipe

        load_recipe(recipe)


def test_fifo_data_file_is_refused_at_its_key(tmp_path, alarm):
    import os

    from dlrun.data.sources import find

    os.mkfifo(tmp_path / "data.npz")
    with pytest.raises(RecipeError, match=r"data file .*data.npz is a FIFO \(named pipe\), not a regular file") as err:
        find("data.npz", tmp_path, ("data", "path"))
    assert err.value.path == ("data", "path")


def test_fifo_predict_input_is_refused(tmp_path, alarm):
    import os

    from dlrun import api

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(MODEL)
    os.mkfifo(tmp_path / "input.csv")
    with pytest.raises(RecipeError, match=r"--input .*input.csv is a FIFO \(named pipe\), not a regular file"):
        api.predict(run, tmp_path / "input.csv")


def test_the_cap_holds_on_bytes_read_not_on_stat(tmp_path):
    """/proc files report size 0 and still hold bytes: the cap counts what a read returns."""
    from dlrun.files import read_regular

    status = Path("/proc/self/status")
    if not status.is_file() or status.stat().st_size != 0:
        pytest.skip("needs a Linux /proc file that under-reports its size")
    with pytest.raises(RecipeError, match="larger than the 16 bytes limit; refused"):
        read_regular(status, 16, "recipe")
    assert read_regular(status, 1 << 20, "recipe").startswith(b"Name:")


def test_a_file_that_is_not_a_recipe_is_never_echoed(tmp_path, capsys):
    """`dlrun validate /etc/shadow`: the error says what is wrong, not what the file holds."""
    from dlrun.cli import main

    shadow = write_bytes(tmp_path, "shadow", b"root:*:19000:0:99999:7:::\nbob:$6$salt$SECRETHASH:19000:0:99999:7:::\n")
    assert main(["validate", str(shadow)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: {shadow}:1:1: this file does not look like a recipe: none of its top-level keys is "
                           "a recipe section (name, model, compile, ...); its content is not shown")  # fmt: skip
    assert "root:" not in err and "SECRETHASH" not in err


def test_a_zip_bomb_is_refused_before_it_unpacks(tmp_path, monkeypatch):
    import zipfile

    from dlrun import files
    from dlrun.data.sources import extract

    monkeypatch.setattr(files, "MAX_EXTRACTED_BYTES", 1024 * 1024)
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(tmp_path / "cache"))
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/a/zeros.png", b"\0" * (2 * 1024 * 1024))  # 2 MB of zeros: a few KB compressed
    with pytest.raises(
        RecipeError, match=r"bomb.zip would unpack to 2.0 MB, more than the 1.0 MB limit; refused"
    ) as err:
        extract(tmp_path / "bomb.zip")
    assert err.value.path == ("data", "path")
