"""Shared base for wire models: loxilb's JSON keys are matched case-insensitively, values are
typed strictly, and every string is bounded and valid Unicode.

The string rules live here, in the model, and not only in the API: a value the model refuses
can enter through no door (REST, CLI, Kubernetes agent, a state file written by an older
version), so nothing downstream (JSON encoding of a GET, the store, a terminal table) can be
poisoned by it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pyloxi.model.limits import (
    MAX_ADDRESS_LEN,
    MAX_COUNTER_LEN,
    MAX_HOST_LEN,
    MAX_NAME_LEN,
    MAX_PROBE_TEXT_LEN,
    MAX_WORD_LEN,
)

# Error types raised by the checks below. A loader of state written by an older (laxer)
# version can tell "a value this version refuses" (skip the rule, report it) from a file that
# does not fit the schema at all (corrupt).
REFUSED_VALUE_ERRORS: Final = frozenset(
    {"string_too_long", "too_long", "string_unicode", "unicode_surrogate", "control_character"}
)


def _has_control(value: str) -> int:
    """Index of the first C0/DEL/C1 control character, or -1."""
    for i, ch in enumerate(value):
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return i
    return -1


def text_problem(value: str, *, single_line: bool = True) -> tuple[str, str] | None:
    """(error type, reason) if `value` is not acceptable text, else None.

    A lone surrogate (JSON "\\ud800" decodes to one) cannot be encoded as UTF-8: kept, it makes
    every later JSON answer that contains it fail. Control characters in one-line identifiers
    (names, addresses, hosts) would corrupt logs and terminal tables; probe payloads may need
    CR/LF and keep them.
    """
    if value.isascii():
        if single_line and _has_control(value) >= 0:
            i = _has_control(value)
            return "control_character", f"control character U+{ord(value[i]):04X} at index {i}"
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return ("unicode_surrogate",
                f"invalid Unicode: lone surrogate U+{ord(value[exc.start]):04X} at index "
                f"{exc.start}")
    if single_line and (i := _has_control(value)) >= 0:
        return "control_character", f"control character U+{ord(value[i]):04X} at index {i}"
    return None


def _one_line(value: str) -> str:
    problem = text_problem(value, single_line=True)
    if problem is not None:
        raise PydanticCustomError(problem[0], problem[1])
    return value


def _any_text(value: str) -> str:
    problem = text_problem(value, single_line=False)
    if problem is not None:
        raise PydanticCustomError(problem[0], problem[1])
    return value


# The string types of wire fields. Field(max_length=...) runs before the Unicode check, so an
# over-long value is refused without being scanned.
Address = Annotated[str, Field(max_length=MAX_ADDRESS_LEN), AfterValidator(_one_line)]
Name = Annotated[str, Field(max_length=MAX_NAME_LEN), AfterValidator(_one_line)]
HostText = Annotated[str, Field(max_length=MAX_HOST_LEN), AfterValidator(_one_line)]
Word = Annotated[str, Field(max_length=MAX_WORD_LEN), AfterValidator(_one_line)]
ProbeText = Annotated[str, Field(max_length=MAX_PROBE_TEXT_LEN), AfterValidator(_any_text)]
CounterText = Annotated[str, Field(max_length=MAX_COUNTER_LEN), AfterValidator(_one_line)]

_KEY_MAPS: dict[type, dict[str, str]] = {}  # model class -> {lower-case key: its spelling}


def wire_names(**names: str) -> ConfigDict:
    """The `model_config` that gives each field its loxilb spelling on the wire (a field
    missing here fails at import). Not `Field(alias=...)`: type checkers take `alias` as the
    constructor's keyword, and code builds models by field name (`Endpoint(endpoint_ip=...)`);
    the wire spelling is for validating JSON and for `wire()`."""

    def alias(field: str) -> str:
        return names[field]

    return ConfigDict(
        alias_generator=AliasGenerator(validation_alias=alias, serialization_alias=alias)
    )


class WireModel(BaseModel):
    """A model whose JSON keys may arrive in any letter case (Go's encoding/json does that).

    Each subclass names its fields' loxilb spellings with `wire_names`; `wire()` writes that
    spelling back, and code builds models by field name. Unknown keys are ignored, as loxilb
    ignores them.

    Types are strict, as Go's decoder is (loxilb's swagger types every number as a JSON number
    and every flag as a boolean; no loxilb client sends them as strings): `true` is not port 1,
    `"80"` and `80.0` are not 80, `1` is not `true`.
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _fold_key_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        by_lower = _KEY_MAPS.get(cls)
        if by_lower is None:
            by_lower = {}
            for name, field in cls.model_fields.items():
                alias = field.validation_alias
                by_lower[name.lower()] = alias if isinstance(alias, str) else name
                if isinstance(alias, str):
                    by_lower[alias.lower()] = alias
            _KEY_MAPS[cls] = by_lower
        return {by_lower.get(k.lower(), k) if isinstance(k, str) else k: v
                for k, v in data.items()}

    def wire(self) -> dict[str, Any]:
        """The loxilb JSON form of this object."""
        return self.model_dump(by_alias=True, mode="json")
