"""Desired LB rules of a Service, and the diff against what a pyloxi instance holds.

A rule is identified by its key (VIP, port, protocol, block); the `name` "<namespace>_<name>"
ties it to its Service, and `managed: true` marks it as the agent's (only those are ever
removed as orphans). Desired rules are LoadBalancerEntry models; what an instance holds is its
JSON as listed (any key case, output-only fields), so the two are compared through `_view`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyloxi.client import ApiError, AsyncClient, rule_body
from pyloxi.k8s.annotations import ServiceOptions
from pyloxi.model.enums import Oper, ProbeType, Protocol
from pyloxi.model.lb import (
    AllowedSource,
    Endpoint,
    LoadBalancerEntry,
    SecondaryIP,
    ServiceArguments,
)

log = logging.getLogger(__name__)

RuleKey = tuple[str, int, str, int]  # (vip, port, protocol, block)


def rule_name(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def _fold(d: Mapping[str, Any] | None) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in (d or {}).items()}


def _norm_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def key_of(body: Mapping[str, Any]) -> RuleKey:
    sa = _fold(_fold(body).get("servicearguments"))
    return (_norm_ip(str(sa.get("externalip", ""))), int(sa.get("port") or 0),
            str(sa.get("protocol") or "tcp").lower(), int(sa.get("block") or 0))


def name_of(body: Mapping[str, Any]) -> str:
    return str(_fold(_fold(body).get("servicearguments")).get("name") or "")


def managed(body: Mapping[str, Any]) -> bool:
    return bool(_fold(_fold(body).get("servicearguments")).get("managed"))


# A source prefix no client ever has (the unspecified address): a VIP family the Service's
# loadBalancerSourceRanges do not cover gets it, so that family admits nobody (kube-proxy
# drops that family's clients too) rather than everybody (an empty list).
NOBODY = {4: "0.0.0.0/32", 6: "::/128"}


def sources_for(vip: str, source_ranges: list[str]) -> list[str]:
    """The Service's source ranges that can match clients of `vip` (pyloxi refuses a prefix of
    the other family). Text that is no prefix stays: building the rule reports it."""
    if not source_ranges:
        return []
    fam = ipaddress.ip_address(vip).version
    out = []
    for p in source_ranges:
        try:
            if ipaddress.ip_network(p.strip(), strict=False).version != fam:
                continue
        except ValueError:
            pass
        out.append(p)
    return out or [NOBODY[fam]]


def build_rules(namespace: str, name: str, opts: ServiceOptions, vips: list[str],
                endpoints: dict[tuple[int, str], list[tuple[str, int]]],
                source_ranges: list[str],
                instance_host: str = "") -> dict[RuleKey, LoadBalancerEntry]:
    """Rules for one instance (prefLocalPod depends on the instance's address).

    Raises pydantic.ValidationError when a value from the Service is one no rule can carry.
    """
    rules: dict[RuleKey, LoadBalancerEntry] = {}
    rname = rule_name(namespace, name)
    for vip in vips:
        sources = sources_for(vip, source_ranges)
        for (port, proto), targets in sorted(endpoints.items()):
            if opts.pref_local_pod and instance_host:
                local = [t for t in targets if t[0] == instance_host]
                targets = local or targets
            if not targets:
                continue  # loxilb needs 1..32 endpoints; no endpoints means no rule
            # without a probe type loxilb ignores the other probe fields: they are not sent
            probe = opts if opts.probe_type else ServiceOptions()
            sa = ServiceArguments(
                external_ip=vip, port=port, protocol=Protocol(proto), sel=opts.sel,
                mode=opts.mode, bgp=opts.bgp, monitor=opts.monitor,
                inactive_timeout=opts.timeout, block=0, managed=True, name=rname,
                oper=Oper.CREATE,
                probe_type=ProbeType(probe.probe_type) if probe.probe_type else "",
                probe_port=probe.probe_port, probe_req=probe.probe_req,
                probe_resp=probe.probe_resp, probe_timeout=opts.probe_timeout,
                probe_retries=opts.probe_retries,
            )
            entry = LoadBalancerEntry(
                service_arguments=sa,
                endpoints=[Endpoint(endpoint_ip=ip, target_port=tp, weight=1)
                           for ip, tp in targets[:32]],
                allowed_sources=[AllowedSource(prefix=p) for p in sources] or None,
                secondary_ips=[SecondaryIP(secondary_ip=ip) for ip in opts.secondary_ips]
                if opts.secondary_ips and proto == "sctp" else None,
            )
            rules[key_of(entry.wire())] = entry
    return rules


def _view(body: Mapping[str, Any], with_probe: bool) -> dict[str, Any]:
    b = _fold(body)
    sa = _fold(b.get("servicearguments"))
    v: dict[str, Any] = {k: sa.get(k) for k in ("sel", "mode", "name")}
    v["monitor"] = bool(sa.get("monitor"))
    v["bgp"] = bool(sa.get("bgp"))
    v["managed"] = bool(sa.get("managed"))
    v["ito"] = int(sa.get("inactivetimeout") or 0)
    if with_probe:
        for k in ("probetype", "probeport", "probereq", "proberesp"):
            v[k] = sa.get(k) or None
    v["eps"] = sorted((_norm_ip(str(_fold(e).get("endpointip"))), int(_fold(e).get("targetport")
                      or 0), int(_fold(e).get("weight") or 0)) for e in b.get("endpoints") or [])
    v["sec"] = sorted(_norm_ip(str(_fold(s).get("secondaryip")))
                      for s in b.get("secondaryips") or [])
    v["src"] = sorted(str(_fold(s).get("prefix")) for s in b.get("allowedsources") or [])
    return v


def differs(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    probe = bool(_fold(desired["serviceArguments"]).get("probetype"))
    return _view(desired, probe) != _view(actual, probe)


def immutable_differs(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """Fields loxilb will not change on an existing rule: re-create instead."""
    d, a = _view(desired, False), _view(actual, False)
    return bool(d["mode"] != a["mode"] or d["sec"] != a["sec"])


@dataclass
class ApplyResult:
    created: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)


async def _delete(api: AsyncClient, key: RuleKey) -> None:
    """Delete one rule by key; one that is gone already counts as deleted."""
    await api.delete_loadbalancer(key[0], key[1], key[2], block=key[3], missing_ok=True)


async def apply_service(api: AsyncClient, rname: str, desired: Mapping[RuleKey, LoadBalancerEntry],
                        current: list[dict[str, Any]]) -> ApplyResult:
    """Make `current` (the instance's rule list, updated in place) hold exactly `desired`
    for the rules named `rname`."""
    res = ApplyResult()
    by_key = {key_of(r): r for r in current}
    mine = {k: r for k, r in by_key.items() if name_of(r) == rname}
    for key, rule in mine.items():
        if key not in desired:
            try:
                await _delete(api, key)
                current.remove(rule)
                res.deleted += 1
            except ApiError as exc:
                res.errors.append(str(exc))
    for key, entry in desired.items():
        body = rule_body(entry)
        have = by_key.get(key)
        if have is not None and name_of(have) != rname:
            res.errors.append(f"{key[0]}:{key[1]}/{key[2]} is held by rule "
                              f"{name_of(have) or '(unnamed)'} on {api.base_url}")
            continue
        if have is not None and not differs(body, have):
            continue
        try:
            if have is not None and immutable_differs(body, have):
                await _delete(api, key)
                current.remove(have)
                res.deleted += 1
                have = None
            # an identical rule already there (a write whose answer was lost) is done too
            await api.create_loadbalancer(entry, exist_ok=True)
            if have is not None:
                current.remove(have)
            current.append(body)
            res.created += 1
        except ApiError as exc:  # e.g. pyloxi's 400 for an IPv6 VIP: the other rules go on
            res.errors.append(f"{key[0]}:{key[1]}/{key[2]}: {exc}")
    return res


async def remove_orphans(api: AsyncClient, owned_names: set[str],
                         current: list[dict[str, Any]]) -> int:
    """Delete managed rules whose name belongs to no Service the agent serves."""
    n = 0
    for rule in list(current):
        if managed(rule) and name_of(rule) not in owned_names:
            key = key_of(rule)
            try:
                await _delete(api, key)
                current.remove(rule)
                n += 1
                log.info("removed orphan rule %s (%s) from %s", key, name_of(rule), api.base_url)
            except ApiError as exc:
                log.warning("orphan %s on %s: %s", key, api.base_url, exc)
    return n
