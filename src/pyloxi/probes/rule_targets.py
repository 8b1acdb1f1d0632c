"""The probe targets an LB rule asks for, named as loxilb names them."""

from __future__ import annotations

import ipaddress

from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes.types import DEFAULT_PERIOD, DEFAULT_RETRIES, PORTED_TYPES, ProbeTarget


def targets_for_rule(entry: LoadBalancerEntry, *, default_period: float = DEFAULT_PERIOD,
                     default_retries: int = DEFAULT_RETRIES) -> list[ProbeTarget]:
    """The probe targets an LB rule asks for (empty unless it monitors its endpoints).

    loxilb's conventions: key `<ip>_<proto>_<targetPort>` with proto tcp/udp/sctp (`ping` for
    icmp and anything else); probetype other than none forces monitoring; without a probetype the
    endpoints are probed with the rule's protocol on their target port; probeport/probereq/
    proberesp override; probeTimeout is the period and probeRetries the failure threshold.
    """
    sa = entry.service_arguments
    rule_ptype = (sa.probe_type or "").lower()
    if not (sa.monitor or rule_ptype not in ("", "none")):
        return []
    proto = (sa.protocol or "tcp").lower()
    key_proto = proto if proto in ("tcp", "udp", "sctp") else "ping"
    out: dict[str, ProbeTarget] = {}
    for ep in entry.endpoints:
        try:
            ip = ipaddress.ip_address(ep.endpoint_ip).compressed
        except ValueError:
            continue
        key = f"{ip}_{key_proto}_{ep.target_port}"
        ptype = rule_ptype or key_proto
        port = (sa.probe_port or ep.target_port) if ptype in PORTED_TYPES else 0
        out[key] = ProbeTarget(
            key=key, ip=ip, ptype=ptype, port=port, req=sa.probe_req, resp=sa.probe_resp,
            period=float(sa.probe_timeout or default_period),
            retries=sa.probe_retries or default_retries,
            ep_proto=proto, ep_port=ep.target_port,
        )
    return list(out.values())
