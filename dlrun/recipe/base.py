"""The one base of every fixed-shape recipe section (schema, search, ensemble)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from dlrun.util import did_you_mean


class Strict(BaseModel):
    """Base for every fixed-shape section: unknown keys are errors with a did-you-mean."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {f.alias or name for name, f in cls.model_fields.items()}  # as written in YAML
            for key in data:
                if key not in known:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key {shown}{hint}; allowed here: {allowed}",
                        {
                            "key": str(key),
                            "shown": repr(str(key)),
                            "hint": did_you_mean(str(key), sorted(known)),
                            "allowed": ", ".join(sorted(known)),
                        },
                    )
        return data
