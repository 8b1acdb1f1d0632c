"""Typed fields of the wire models: what a single value may be, whichever door it comes in by.

- numbers carry their range (`Port` 0-65535, `Weight` 0-255, timeouts, retries), from
  `pyloxi.model.limits`;
- addresses are checked and kept in their canonical text form (the wire stays a string);
- `sel`, `mode` and `oper` are loxilb's numbers, decoded into `Selection` / `NatMode` / `Oper`;
- protocol and probe type words are matched case-insensitively (surrounding spaces ignored)
  and kept in loxilb's lower-case spelling.

What depends on several fields (a port range, icmp without ports, what the engine supports) is
the engine's business (`pyloxi.engine.validate`), not a field type's.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from pyloxi.model.base import Address, text_problem
from pyloxi.model.enums import NatMode, Oper, ProbeType, Protocol, Selection
from pyloxi.model.limits import (
    MAX_IDLE_TIMEOUT,
    MAX_PROBE_PERIOD,
    MAX_PROBE_RETRIES,
    MAX_PROBE_TIMEOUT,
    MAX_WEIGHT,
    MAX_WORD_LEN,
    PORT_MAX,
    UINT32_MAX,
)

# ---------------------------------------------------------------- numbers

Port = Annotated[int, Field(ge=0, le=PORT_MAX)]
Weight = Annotated[int, Field(ge=0, le=MAX_WEIGHT)]
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
IdleTimeout = Annotated[int, Field(ge=0, le=MAX_IDLE_TIMEOUT)]
ProbeTimeout = Annotated[int, Field(ge=0, le=MAX_PROBE_TIMEOUT)]
ProbePeriod = Annotated[int, Field(ge=0, le=MAX_PROBE_PERIOD)]
ProbeRetries = Annotated[int, Field(ge=0, le=MAX_PROBE_RETRIES)]
Count = Annotated[int, Field(ge=0)]

# ---------------------------------------------------------------- addresses


def canonical_ip(text: str) -> str | None:
    """The canonical text of an IPv4 or IPv6 address (surrounding spaces ignored), or None.

    inet_pton first: 20x faster than ipaddress, and a bulk create checks several addresses a
    rule. ipaddress only for what inet_pton refuses (a scoped IPv6 address "fe80::1%eth0")."""
    text = text.strip()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):  # ValueError: a NUL character
            pass
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _ip(value: str) -> str:
    canonical = canonical_ip(value)
    if canonical is None:
        raise PydanticCustomError("ip_address", "{value} is not an IP address",
                                  {"value": repr(value)})
    return canonical


def _ip_or_empty(value: str) -> str:
    return value if value == "" else _ip(value)


def _prefix(value: str) -> str:
    text = value.strip()
    # Fast path for IPv4 "a.b.c.d[/n]" (ip_network costs ~3 us); the same result and the same
    # acceptance: anything else (a netmask, IPv6, an error) goes to ip_network.
    addr, slash, bits = text.partition("/")
    if not slash or (bits.isascii() and bits.isdigit() and int(bits) <= 32):
        try:
            packed = socket.inet_pton(socket.AF_INET, addr)
        except (OSError, ValueError):
            pass
        else:
            n = int(bits) if slash else 32
            net = int.from_bytes(packed, "big") & (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF
            return f"{socket.inet_ntop(socket.AF_INET, net.to_bytes(4, 'big'))}/{n}"
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise PydanticCustomError(
            "ip_prefix", "{value} is not an IP prefix (CIDR such as 10.0.0.0/24)",
            {"value": repr(value)}) from None


# IPv4 or IPv6, canonical text ("1.2.3.4", "2001:db8::1"). Which addresses a rule can use
# (IPv4 only for now, unicast) is the engine's check.
# The OpenAPI document says so too (formats), so clients and fuzzers send addresses.
_IP_FORMATS: list[dict[str, Any]] = [{"format": "ipv4"}, {"format": "ipv6"}]
IPAddress = Annotated[Address, AfterValidator(_ip), Field(json_schema_extra={"anyOf": _IP_FORMATS})]
OptionalIPAddress = Annotated[Address, AfterValidator(_ip_or_empty),  # "" = none
                              Field(json_schema_extra={"anyOf": [*_IP_FORMATS, {"const": ""}]})]
# A network in canonical form: "10.1.2.3/16" -> "10.1.0.0/16", "10.1.1.1" -> "10.1.1.1/32".
IPPrefix = Annotated[Address, AfterValidator(_prefix)]

# ---------------------------------------------------------------- enumerations


def _numbered(enum: type[IntEnum], what: str) -> Callable[[Any], Any]:
    """Before-validator: a JSON integer (not a boolean) that is one of `enum`'s numbers."""
    choices = ", ".join(f"{m.value} {m.name.lower()}" for m in enum)

    def check(value: Any) -> Any:
        if isinstance(value, enum):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return enum(value)
            except ValueError:
                raise PydanticCustomError(
                    "enum", "{value} is not a valid {what} ({choices})",
                    {"value": value, "what": what, "choices": choices}) from None
        raise PydanticCustomError("int_type", "Input should be a valid integer")

    return check


def _worded(enum: type[StrEnum], what: str, *, empty_ok: bool = False) -> Callable[[Any], Any]:
    """Before-validator: one of `enum`'s words, in any letter case, spaces around ignored."""
    choices = ", ".join(m.value for m in enum)
    exact: dict[str, Any] = {m.value: m for m in enum} | ({"": ""} if empty_ok else {})

    def check(value: Any) -> Any:
        if isinstance(value, enum):
            return value
        hit = exact.get(value) if type(value) is str else None
        if hit is not None:  # the common case: already loxilb's spelling
            return hit
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "Input should be a valid string")
        if len(value) > MAX_WORD_LEN:
            raise PydanticCustomError("string_too_long",
                                      "String should have at most {max_length} characters",
                                      {"max_length": MAX_WORD_LEN})
        problem = text_problem(value)
        if problem is not None:
            raise PydanticCustomError(problem[0], problem[1])
        word = value.strip().lower()
        if empty_ok and not word:
            return ""
        try:
            return enum(word)
        except ValueError:
            raise PydanticCustomError(
                "enum", "unknown {what} {value}: expected one of {choices}",
                {"what": what, "value": repr(value), "choices": choices}) from None

    return check


WireSelection = Annotated[Selection, BeforeValidator(_numbered(Selection, "sel"))]
WireNatMode = Annotated[NatMode, BeforeValidator(_numbered(NatMode, "mode"))]
WireOper = Annotated[Oper, BeforeValidator(_numbered(Oper, "oper"))]
WireProtocol = Annotated[Protocol, BeforeValidator(_worded(Protocol, "protocol"))]
# A rule's probetype: "" (the default) probes with the rule's protocol when `monitor` is on.
RuleProbeType = Annotated[
    ProbeType | Literal[""], BeforeValidator(_worded(ProbeType, "probe type", empty_ok=True))
]
