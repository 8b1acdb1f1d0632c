"""Shared base for wire models: loxilb's JSON keys are matched case-insensitively."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

_KEY_MAPS: dict[type, dict[str, str]] = {}  # model class -> {lower-case key: its spelling}


class WireModel(BaseModel):
    """A model whose JSON keys may arrive in any letter case (Go's encoding/json does that).

    Fields are declared with their loxilb spelling as alias; `model_dump(by_alias=True)` writes
    that spelling back. Unknown keys are ignored, as loxilb ignores them.
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _fold_key_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        by_lower = _KEY_MAPS.get(cls)
        if by_lower is None:
            by_lower = {}
            for name, field in cls.model_fields.items():
                by_lower[name.lower()] = field.alias or name
                if field.alias:
                    by_lower[field.alias.lower()] = field.alias
            _KEY_MAPS[cls] = by_lower
        return {by_lower.get(k.lower(), k) if isinstance(k, str) else k: v
                for k, v in data.items()}

    def wire(self) -> dict[str, Any]:
        """The loxilb JSON form of this object."""
        return self.model_dump(by_alias=True, mode="json")
