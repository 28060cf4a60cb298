"""dlrun: Keras, declared. One YAML recipe -> validated, compiled, trained, evaluated Keras model.

The public API is imported lazily so that `import dlrun` and `dlrun validate` never load TensorFlow.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["build_model", "check", "evaluate", "load_recipe", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dlrun import api

        return getattr(api, name)
    raise AttributeError(f"module 'dlrun' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps `dlrun.train` and `dlrun.evaluate` the API functions.

    Importing the subpackages `dlrun.train` / `dlrun.evaluate` (which `dlrun.train(...)` itself does)
    would otherwise bind the module over the function, and the next `dlrun.train(...)` would fail with
    "'module' object is not callable". The submodules stay importable through `sys.modules`.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
