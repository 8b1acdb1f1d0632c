"""Parsing of CLI arguments (loxicmd syntax) into wire values. Pure functions, no I/O.

Every failure raises InputError with a one-line reason; the commands turn that into exit code 2
before any API call is made.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from pyloxi.model.enums import NatMode, ProbeType, Selection
from pyloxi.model.fields import canonical_ip
from pyloxi.model.limits import MAX_WEIGHT, PORT_MAX

SELECT_NAMES: dict[str, Selection] = {s.name.lower(): s for s in Selection}
MODE_NAMES: dict[str, NatMode] = {m.name.lower(): m for m in NatMode}
PROBE_NAMES: dict[str, ProbeType] = {p.value: p for p in ProbeType}

E = TypeVar("E", bound=Enum)


class InputError(ValueError):
    """A command-line value that cannot be used; str() is the one-line reason."""


@dataclass(frozen=True, slots=True)
class PortSpec:
    port: int
    port_max: int  # 0: no range
    target: int


def split_list(values: Iterable[str] | str | None) -> list[str]:
    """Comma-separated and/or repeated option values, flattened, blanks dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for v in values for item in v.split(",") if item.strip()]


def parse_ip(text: str, what: str = "IP address") -> str:
    """An address as the wire models keep it (canonical text); IPv6 may come in brackets."""
    ip = canonical_ip(text.strip().strip("[]"))
    if ip is None:
        raise InputError(f"invalid {what} {text!r}")
    return ip


def parse_int(text: str | int, what: str, lo: int, hi: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise InputError(f"invalid {what} {text!r}: not an integer") from None
    if not lo <= value <= hi:
        raise InputError(f"invalid {what} {value}: must be {lo}-{hi}")
    return value


def _port_range(text: str, opt: str) -> tuple[int, int]:
    """'80' -> (80, 0); '8080-8081' -> (8080, 8081)."""
    if "-" in text:
        lo_s, _, hi_s = text.partition("-")
        lo = parse_int(lo_s, f"{opt} port", 1, PORT_MAX)
        hi = parse_int(hi_s, f"{opt} port", 1, PORT_MAX)
        if hi < lo:
            raise InputError(f"invalid {opt} port range {text!r}: end below start")
        return lo, (0 if hi == lo else hi)
    return parse_int(text, f"{opt} port", 1, PORT_MAX), 0


def parse_port_specs(values: Iterable[str] | str | None, opt: str) -> list[PortSpec]:
    """`--tcp=80:8080,443:8443` / `--tcp=8080-8081:32015` / `--tcp=80` (target = port).

    One PortSpec per pair: loxicmd creates one rule for each.
    """
    specs = []
    for item in split_list(values):
        ports, sep, target_s = item.partition(":")
        port, port_max = _port_range(ports.strip(), opt)
        target = parse_int(target_s, f"{opt} target port", 0, PORT_MAX) if sep else port
        specs.append(PortSpec(port, port_max, target))
    return specs


def parse_delete_ports(values: Iterable[str] | str | None, opt: str) -> list[tuple[int, int]]:
    """`delete lb --tcp=80,8080-8081`: (port, port_max) keys. A ':TARGET' suffix is ignored so
    the create spec can be pasted."""
    return [_port_range(item.partition(":")[0].strip(), opt) for item in split_list(values)]


def parse_endpoint(text: str) -> tuple[str, int]:
    """'IP:WEIGHT' (loxicmd), 'IP' (weight 1), '[v6]:WEIGHT' or 'v6' for IPv6."""
    item = text.strip()
    if item.startswith("["):
        addr, sep, rest = item[1:].partition("]")
        if not sep:
            raise InputError(f"invalid endpoint {text!r}: missing ']'")
        weight_s = rest[1:] if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            raise InputError(f"invalid endpoint {text!r}: expected [IP]:WEIGHT")
        ip = parse_ip(addr, "endpoint IP")
        weight = parse_int(weight_s, f"endpoint weight in {text!r}", 0, MAX_WEIGHT) if rest else 1
        return ip, weight
    addr, sep, weight_s = item.rpartition(":")
    if sep:
        addr_ip = canonical_ip(addr)
        if addr_ip is not None:
            return addr_ip, parse_int(weight_s, f"endpoint weight in {text!r}", 0, MAX_WEIGHT)
    item_ip = canonical_ip(item)
    if item_ip is not None:
        return item_ip, 1
    if sep and ":" not in addr:  # looked like IPv4:WEIGHT; name the bad part
        raise InputError(f"invalid endpoint {text!r}: {addr!r} is not an IP address")
    raise InputError(f"invalid endpoint {text!r}: expected IP:WEIGHT")


def parse_endpoints(values: Iterable[str] | str | None) -> list[tuple[str, int]]:
    return [parse_endpoint(item) for item in split_list(values)]


def parse_cidrs(values: Iterable[str] | str | None, what: str = "source prefix") -> list[str]:
    out = []
    for item in split_list(values):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise InputError(f"invalid {what} {item!r}: expected a CIDR like 10.0.0.0/24") from None
    return out


def parse_choice(text: str, table: Mapping[str, E], opt: str) -> E:
    key = text.strip().lower()
    if key not in table:
        raise InputError(f"invalid {opt} {text!r}: expected one of {'|'.join(table)}")
    return table[key]
