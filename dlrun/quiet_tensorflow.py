"""No TensorFlow start-up chatter, wherever TensorFlow first loads.

TensorFlow's C++ side writes lines to fd 2 while it loads (absl's "All log messages before
absl::InitializeLog()", oneDNN, cudart; TF_CPP_MIN_LOG_LEVEL does not reach them) and at its first op
("failed call to cuInit" on machines without a GPU). `import dlrun` installs a one-shot import hook, so
every site that imports TensorFlow — Keras under the tensorflow backend, tf.data under jax and torch,
`dlrun import`, tflite export, the Python API — loads it with fd 2 silenced and TF_CPP_MIN_LOG_LEVEL
defaulting to 3. The user's own TF_CPP_MIN_LOG_LEVEL wins; DLRUN_VERBOSE=1 turns all of it off. Only
stdlib imports here: `import dlrun` stays light.

The same hook is where every verb's first status appears on a terminal (`before_load`: the CLI registers
"loading TensorFlow"), so that no verb sits silent through TensorFlow's several seconds of import.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any


@contextlib.contextmanager
def silenced_fd2() -> Iterator[None]:
    """Send what native code writes to fd 2 to /dev/null for a while; Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


# Called just before TensorFlow starts loading; what one returns (when not None) is called once it has loaded.
_BEFORE_LOAD: list[Callable[[], Callable[[], None] | None]] = []


def before_load(hook: Callable[[], Callable[[], None] | None]) -> None:
    """Run `hook()` just before TensorFlow starts loading, wherever that happens; if it returns a callable,
    that runs once TensorFlow has loaded (or failed to). Registered once per hook."""
    if hook not in _BEFORE_LOAD:
        _BEFORE_LOAD.append(hook)


_announced = False


@contextlib.contextmanager
def announced_load() -> Iterator[None]:
    """Run the `before_load` hooks (once per process), then the body (TensorFlow's load), then what they
    returned. Sites that silence fd 2 around a load call this first, while the terminal still shows."""
    global _announced
    if _announced:
        yield
        return
    _announced = True
    after = [done for hook in _BEFORE_LOAD if (done := hook()) is not None]
    try:
        yield
    finally:
        for done in after:
            done()


def verbose() -> bool:
    """DLRUN_VERBOSE set: TensorFlow's own lines are wanted."""
    return bool(os.environ.get("DLRUN_VERBOSE"))


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with fd 2 silenced."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        uninstall()  # TensorFlow loads once per process
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read at load: hides "failed call to cuInit" too
        with announced_load(), silenced_fd2():
            self._inner.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self._inner, name)


class QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders, then wraps its loader in `_QuietLoader`. Stays installed
    until TensorFlow loads: `importlib.util.find_spec("tensorflow")` probes (Keras makes some) load nothing."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow" or verbose():
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Install the hook (idempotent; a no-op once TensorFlow is loaded)."""
    if "tensorflow" in sys.modules or any(isinstance(f, QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, QuietTensorFlowFinder())


def uninstall() -> None:
    """Remove the hook (TensorFlow has loaded)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, QuietTensorFlowFinder)]
