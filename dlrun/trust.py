"""Consent and integrity: which code a recipe or a run folder may import, and whether an artifact changed.

Consent comes from the person at the keyboard, never from a file:
- a recipe's `imports:` may name modules inside the recipe's own folder tree and installed packages; a path
  that leaves the folder (`../x.py`, `/abs/x.py`, a symlink pointing out) needs `--trust`;
- a run folder (what `eval`, `predict`, `export`, `ensemble` and `--resume` read) imports nothing unless
  `--trust` is on that command line, whatever its own `recipe.yaml` says.

Integrity: training records the sha256 of `model.keras` and of every imported file in
`RUN/integrity.json`; verbs that read the run refuse when a recorded file changed. The hashes catch
accidental or later edits; they are not a signature (whoever can edit the folder can edit the record).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from dlrun.errors import RecipeError

INTEGRITY = "integrity.json"
MODEL = "model.keras"


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _installed(top: str) -> bool:
    """Whether `top` is a standard-library module or the top-level name of an installed distribution."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return True
    from importlib.metadata import packages_distributions

    return top in packages_distributions()


def outside_reason(module: str, base_dir: Path) -> str | None:
    """Why importing `module` for a recipe in `base_dir` needs `--trust`; None when it may be imported.

    Allowed: a `.py` file inside `base_dir`'s tree, a module found there, an installed package, or a module
    already imported (nothing new runs). Finding a module never executes it (`find_spec` of a top level only).
    """
    if module.endswith(".py"):
        file = Path(module)
        if file.is_absolute():
            return f"{module!r} is an absolute path"
        if not _inside(base_dir / file, base_dir):
            return f"{module!r} is outside the recipe's folder {base_dir}"
        return None
    top = module.split(".")[0]
    if top in sys.modules or _installed(top):
        return None
    sys.path.insert(0, str(base_dir))
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    finally:
        sys.path.remove(str(base_dir))
    if spec is None:
        return None  # nothing to import: the import itself reports that it is missing
    origin = spec.origin or next(iter(spec.submodule_search_locations or []), None)
    if origin and _inside(Path(origin), base_dir):
        return None
    return f"{module!r} is found at {origin}, outside the recipe's folder and not an installed package"


def announce(what: str) -> None:
    """Say on stderr which custom code is being imported (the user sees what runs)."""
    print(f"importing custom code: {what}", file=sys.stderr)


def _imported_files(run_path: Path, imports: list[str]) -> list[str]:
    files = []
    for entry in imports:
        module = entry.split(":")[0]
        if module.endswith(".py") and (run_path / module).is_file() and _inside(run_path / module, run_path):
            files.append(module)
    return files


def record_run(run_path: Path, imports: list[str]) -> None:
    """Write RUN/integrity.json: the sha256 of model.keras and of every imported `.py` file in the run."""
    from dlrun.files import atomic_write_text

    files = [MODEL, *_imported_files(run_path, imports)] if (run_path / MODEL).is_file() else []
    record = {"sha256": {name: sha256(run_path / name) for name in files}}
    atomic_write_text(run_path / INTEGRITY, json.dumps(record, indent=2) + "\n")


def verify_run(run_path: Path) -> None:
    """Refuse (RecipeError) when a file recorded in RUN/integrity.json is gone or changed; runs without a
    record (older dlrun) pass."""
    record_file = run_path / INTEGRITY
    if not record_file.is_file():
        return
    try:
        recorded = json.loads(record_file.read_text(encoding="utf-8"))["sha256"]
        assert isinstance(recorded, dict)
    except (ValueError, KeyError, TypeError, AssertionError, OSError):
        raise RecipeError(f"{record_file} is unreadable; refused (restore it, or train the run again)") from None
    for name, digest in recorded.items():
        file = run_path / str(name)
        if not _inside(file, run_path) or not file.is_file():
            raise RecipeError(f"{file} was recorded at training but is missing; refused")
        if sha256(file) != digest:
            raise RecipeError(
                f"{file} changed since training (its sha256 differs from {INTEGRITY}); refused — restore it, "
                "or train the run again"
            )


# ----------------------------------------------------------------------------------------------------
# writes stay in the run folder; the network needs --trust

WRITTEN_PATHS = {
    "ModelCheckpoint": "filepath",
    "CSVLogger": "filename",
    "TensorBoard": "log_dir",
    "BackupAndRestore": "backup_dir",
}  # the callback argument that names where it writes; dlrun places it inside the run folder
NETWORK_CALLBACKS = frozenset({"RemoteMonitor"})
# `{epoch:03d}`, `{val_loss:.2f}`: Keras fills these in; a fill character (`{epoch:/>9}`) could write a path
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(?::[0-9.]*[a-zA-Z%]?)?\}")


def write_path_problem(callback: str, kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """(argument, why) when a callback's write path would leave the run folder; None when it stays inside."""
    key = WRITTEN_PATHS.get(callback)
    if key is None or key not in kwargs:
        return None
    value = kwargs[key]
    if not isinstance(value, str) or not value.strip():
        return key, f"expected a file name inside the run folder, got {value!r}"
    plain = _PLACEHOLDER.sub("0", value)
    if "{" in plain or "}" in plain:
        return key, f"{value!r}: placeholders take a name and a plain format, like {{epoch:03d}} or {{val_loss:.2f}}"
    path = PurePosixPath(plain.replace("\\", "/"))
    if path.is_absolute() or plain.startswith("~") or re.match(r"^[A-Za-z]:", plain):
        return key, f"{value!r} is an absolute path; {callback} writes inside the run folder: give a relative name"
    if ".." in path.parts:
        return key, f"{value!r} leaves the run folder ('..'); {callback} writes inside the run folder"
    return None


def check_network(callback: str, trust: bool, path: tuple[str | int, ...]) -> None:
    """RecipeError for a callback that sends data over the network unless the user passed --trust."""
    if callback in NETWORK_CALLBACKS and not trust:
        raise RecipeError(
            f"{callback} sends training data over the network; refused — pass --trust to allow it", path=path
        )


# ----------------------------------------------------------------------------------------------------
# a .keras file that does not load: say why, truthfully


def _custom_classes(config: Any) -> list[str]:
    """Registered names of the non-Keras classes a saved model's config names (`package>Class`)."""
    found: list[str] = []
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module = str(node.get("module") or "")
            name = node.get("registered_name") or node.get("class_name")
            if isinstance(name, str) and node.get("class_name") and module and not module.startswith("keras"):
                found.append(name)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(set(found))


def model_load_error(path: Path, exc: Exception) -> RecipeError | None:
    """A one-line, truthful `RecipeError` for a `.keras` file Keras could not load; None when not recognised."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return RecipeError(f"{path} is not a valid .keras file (not a zip archive: truncated or corrupt?); refused")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return RecipeError(f"{path} is not a valid .keras file (its config.json is missing or unreadable); refused")
    custom = _custom_classes(config)
    if custom and isinstance(exc, TypeError | ValueError):
        names = ", ".join(repr(c) for c in custom)
        return RecipeError(
            f"{path.name} uses custom classes {names} whose code is not imported; pass --trust to import the run's "
            "custom code (only if you trust where it came from)"
        )
    return None


# ----------------------------------------------------------------------------------------------------
# the Keras that loads .keras files must have the safe-mode fixes

KERAS_FLOOR = (3, 15, 1)
KERAS_ADVISORIES = (  # as listed in issue 17
    "CVE-2025-1550, CVE-2025-8747, CVE-2025-9905, CVE-2025-9906, CVE-2026-1669, CVE-2026-1462, CVE-2026-12479, "
    "CVE-2026-12481"
)


def _version(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text.split("+")[0])[:3]
    return tuple(int(p) for p in parts)


def check_keras_version(version: str, *, unsafe: bool) -> None:
    """Refuse to load a `.keras` file with a Keras older than the safe-mode fixes (a warning with --unsafe)."""
    if _version(version) >= KERAS_FLOOR:
        return
    floor = ".".join(map(str, KERAS_FLOOR))
    message = (
        f"Keras {version} is older than {floor} and its safe mode can be bypassed by a crafted .keras file "
        f"({KERAS_ADVISORIES}); upgrade: pip install 'keras>={floor}'"
    )
    if not unsafe:
        raise RecipeError(f"{message}; refused to load a model file (--unsafe loads it anyway)")
    print(f"warning: {message}", file=sys.stderr)
