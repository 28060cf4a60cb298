"""dlrun: Keras, declared. One YAML recipe -> validated, compiled, trained, evaluated Keras model.

The public API is imported lazily so that `import dlrun` and `dlrun validate` never load TensorFlow.
"""

from __future__ import annotations

from typing import Any

from dlrun import quiet_tensorflow

quiet_tensorflow.install()  # TensorFlow's start-up lines hidden wherever it first loads (see the module)

__all__ = ["build_model", "check", "evaluate", "load_recipe", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dlrun import api

        return getattr(api, name)
    raise AttributeError(f"module 'dlrun' has no attribute {name!r}")
