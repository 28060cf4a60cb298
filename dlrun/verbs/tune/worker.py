"""One `dlrun tune --workers N` worker process: `python -m dlrun.verbs.tune.worker '<json arguments>'`.

It runs `run_study` on the shared study (the parent already checked the recipe and created the study) and
prints its trials' lines with its number; a user error is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dlrun.errors import EXIT_USER, RecipeError


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    from dlrun.backend import quiet_native_startup
    from dlrun.verbs.tune.study import run_study

    try:
        with quiet_native_startup():
            import keras  # noqa: F401  (TensorFlow's start-up lines hidden)
        run_study(
            Path(args["recipe"]),
            overrides=tuple(args["overrides"]),
            trials=args["trials"],
            study_dir=Path(args["study_dir"]),
            timeout=args["timeout"],
            trust=args["trust"],
            storage=args["storage"],
            quiet=False,
        )
    except RecipeError as exc:
        print(f"worker {args['worker']}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
