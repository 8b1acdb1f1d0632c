"""Shared base for wire models: loxilb's JSON keys are matched case-insensitively."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


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
        by_lower: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            by_lower[name.lower()] = field.alias or name
            if field.alias:
                by_lower[field.alias.lower()] = field.alias
        out: dict[str, Any] = {}
        for key, value in data.items():
            canon = by_lower.get(key.lower(), key) if isinstance(key, str) else key
            out[canon] = value
        return out

    def wire(self) -> dict[str, Any]:
        """The loxilb JSON form of this object."""
        return self.model_dump(by_alias=True, mode="json")
