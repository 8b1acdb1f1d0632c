"""kube-loxilb Service annotations: parsed and validated into one `ServiceOptions`.

Every problem is collected (not just the first), so the Event on the Service names them all.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from pyloxi.k8s.config import DEFAULT_POOL, AgentConfig
from pyloxi.model.enums import PROBE_TYPES, NatMode, Selection
from pyloxi.model.limits import (
    MAX_IDLE_TIMEOUT,
    MAX_PROBE_RETRIES,
    MAX_PROBE_TIMEOUT,
    MAX_SECONDARY_IPS,
    PORT_MAX,
)

P = "loxilb.io/"
LBMODE = P + "lbmode"
EPSELECT = P + "epselect"
LIVENESS = P + "liveness"
PROBETYPE = P + "probetype"
PROBEPORT = P + "probeport"
PROBEREQ = P + "probereq"
PROBERESP = P + "proberesp"
PROBETIMEOUT = P + "probetimeout"
PROBERETRIES = P + "proberetries"
TIMEOUT = P + "timeout"
STATICIP = P + "staticIP"
POOLSELECT = P + "poolSelect"
SECONDARYIPS = P + "secondaryIPs"
USEPODNETWORK = P + "usepodnetwork"
PREFLOCALPOD = P + "prefLocalPod"
NODELABEL = P + "nodelabel"
IPAM = P + "ipam"
ZONESELECT = P + "zoneselect"
BGP = P + "bgp"

# kube-loxilb's annotation words for loxilb's numbered enums
LB_MODES = {"default": NatMode.DEFAULT, "onearm": NatMode.ONEARM, "fullnat": NatMode.FULLNAT,
            "dsr": NatMode.DSR, "fullproxy": NatMode.FULLPROXY,
            "hostonearm": NatMode.HOSTONEARM}
EP_SELECT = {"rr": Selection.RR, "roundrobin": Selection.RR, "hash": Selection.HASH,
             "priority": Selection.PRIORITY, "persist": Selection.PERSIST, "lc": Selection.LC,
             "n2": Selection.N2, "n3": Selection.N3}
IPAM_MODES = {"ipv4": "ipv4", "ip": "ipv4", "ip4": "ipv4", "ipv6": "ipv6", "ip6": "ipv6",
              "nat66": "ipv6", "ipv6to4": "nat64", "nat64": "nat64"}
DEFAULT_TIMEOUT = 1800
SINGLE_STACK = "SingleStack"
PREFER_DUAL_STACK = "PreferDualStack"
REQUIRE_DUAL_STACK = "RequireDualStack"
IP_FAMILY = {"IPv4": 4, "IPv6": 6}
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


class AnnotationError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ServiceOptions:
    mode: NatMode = NatMode.DEFAULT
    sel: Selection = Selection.RR
    monitor: bool = False
    probe_type: str = ""
    probe_port: int = 0
    probe_req: str = ""
    probe_resp: str = ""
    probe_timeout: int = 0
    probe_retries: int = 0
    timeout: int = DEFAULT_TIMEOUT
    static_ip: str = ""
    pool: str = DEFAULT_POOL
    use_pod_network: bool = False
    pref_local_pod: bool = False
    node_label: str = ""
    ipam: str = "ipv4"  # ipv4 | ipv6 | nat64
    zone_select: str = ""
    secondary_ips: tuple[str, ...] = ()  # SCTP multihoming: extra VIPs of the sctp rules
    bgp: bool = False  # the rules' VIPs are announced through BGP (setBGP, or loxilb.io/bgp)
    # spec.ipFamilyPolicy, and the VIP families wanted, primary first (empty: from `ipam`)
    policy: str = SINGLE_STACK
    families: tuple[int, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def vip_families(self) -> tuple[int, ...]:
        return self.families or ((4,) if self.ipam == "ipv4" else (6,))

    @property
    def vip_family(self) -> int:
        """The primary family."""
        return self.vip_families[0]

    @property
    def dual_stack(self) -> bool:
        return self.policy in (PREFER_DUAL_STACK, REQUIRE_DUAL_STACK)

    def endpoint_family_for(self, vip_family: int) -> int:
        """Endpoints have the VIP's family, except that `ipam: nat64` gives a v6 VIP v4 ones."""
        return 4 if vip_family == 4 or self.ipam == "nat64" else 6

    @property
    def endpoint_family(self) -> int:
        return self.endpoint_family_for(self.vip_family)


def _yesno(problems: list[str], key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "true"):
        return True
    if v in ("no", "false"):
        return False
    problems.append(f"{key}={value!r}: expected yes or no")
    return False


def _int(problems: list[str], key: str, value: str, lo: int, hi: int) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        problems.append(f"{key}={value!r}: not an integer")
        return 0
    if not lo <= n <= hi:
        problems.append(f"{key}={value!r}: out of range {lo}..{hi}")
        return 0
    return n


def _ip(problems: list[str], key: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        problems.append(f"{key}={value!r}: not an IP address")
        return ""


def parse(service: dict[str, Any], cfg: AgentConfig, pools4: set[str],
          pools6: set[str]) -> ServiceOptions:
    """ServiceOptions for a Service, or AnnotationError listing every invalid annotation."""
    ann: dict[str, str] = (service.get("metadata") or {}).get("annotations") or {}
    spec = service.get("spec") or {}
    problems: list[str] = []
    o: dict[str, Any] = {"mode": cfg.lb_mode, "monitor": cfg.monitor,
                         "use_pod_network": cfg.use_pod_network}

    spec_families = [IP_FAMILY[f] for f in spec.get("ipFamilies") or [] if f in IP_FAMILY]
    spec_families = list(dict.fromkeys(spec_families)) or [4]
    policy = spec.get("ipFamilyPolicy") or SINGLE_STACK
    if policy not in (SINGLE_STACK, PREFER_DUAL_STACK, REQUIRE_DUAL_STACK):
        policy = SINGLE_STACK  # the apiserver validates it; anything else is served single
    o["policy"] = policy
    if IPAM in ann:
        v = ann[IPAM].strip().lower()
        if v not in IPAM_MODES:
            problems.append(f"{IPAM}={ann[IPAM]!r}: expected one of {', '.join(IPAM_MODES)}")
        else:
            o["ipam"] = IPAM_MODES[v]
    elif spec_families[0] == 6:
        o["ipam"] = "ipv6"
    if policy == SINGLE_STACK:
        # one family: the ipam annotation's, else the first of spec.ipFamilies
        families = [6 if o.get("ipam", "ipv4") != "ipv4" else 4]
    else:
        # dual-stack: spec.ipFamilies decides (primary first); `ipam` only says nat64
        families = spec_families
        if policy == REQUIRE_DUAL_STACK and len(families) < 2:
            families.append(6 if families[0] == 4 else 4)
    o["families"] = tuple(families)

    if LBMODE in ann:
        v = ann[LBMODE].strip().lower()
        if v not in LB_MODES:
            problems.append(f"{LBMODE}={ann[LBMODE]!r}: expected one of {', '.join(LB_MODES)}")
        else:
            o["mode"] = LB_MODES[v]
    if EPSELECT in ann:
        v = ann[EPSELECT].strip().lower()
        if v not in EP_SELECT:
            problems.append(
                f"{EPSELECT}={ann[EPSELECT]!r}: expected one of {', '.join(EP_SELECT)}")
        else:
            o["sel"] = EP_SELECT[v]
    if o.get("mode") == LB_MODES["dsr"]:
        if EPSELECT not in ann:
            o["sel"] = EP_SELECT["hash"]  # loxilb accepts DSR only with hash selection
        elif o.get("sel", 0) != EP_SELECT["hash"]:
            problems.append(f"{LBMODE}=dsr needs {EPSELECT}=hash")
    if LIVENESS in ann:
        o["monitor"] = _yesno(problems, LIVENESS, ann[LIVENESS]) or cfg.monitor
    if PROBETYPE in ann:
        v = ann[PROBETYPE].strip().lower()
        if v not in PROBE_TYPES:
            problems.append(
                f"{PROBETYPE}={ann[PROBETYPE]!r}: expected one of {', '.join(PROBE_TYPES)}")
        else:
            o["probe_type"] = v
    probing = o.get("probe_type", "") not in ("", "none")
    if PROBEPORT in ann:
        o["probe_port"] = _int(problems, PROBEPORT, ann[PROBEPORT], 1, PORT_MAX)
    if PROBEREQ in ann:
        o["probe_req"] = ann[PROBEREQ]
    if PROBERESP in ann:
        o["probe_resp"] = ann[PROBERESP]
    if PROBETIMEOUT in ann:
        o["probe_timeout"] = _int(problems, PROBETIMEOUT, ann[PROBETIMEOUT], 1, MAX_PROBE_TIMEOUT)
    if PROBERETRIES in ann:
        o["probe_retries"] = _int(problems, PROBERETRIES, ann[PROBERETRIES], 1, MAX_PROBE_RETRIES)
    if probing:
        o["monitor"] = True  # loxilb: a probe type other than none forces monitoring
        if o["probe_type"] in ("tcp", "udp", "sctp") and not o.get("probe_port") \
                and PROBEPORT not in ann:
            problems.append(f"{PROBETYPE}={o['probe_type']} needs {PROBEPORT}")
    elif o.get("probe_type") in ("", "none"):
        # loxilb ignores the probe details without a probe type; so do we
        for k in ("probe_port", "probe_req", "probe_resp"):
            o.pop(k, None)
    if TIMEOUT in ann:
        o["timeout"] = _int(problems, TIMEOUT, ann[TIMEOUT], 1, MAX_IDLE_TIMEOUT)
    if STATICIP in ann:
        ip = _ip(problems, STATICIP, ann[STATICIP])
        if ip and ipaddress.ip_address(ip).version not in families:
            problems.append(f"{STATICIP}={ip}: not an "
                            f"{' or '.join(f'IPv{f}' for f in families)} address")
        o["static_ip"] = ip
    if POOLSELECT in ann:
        # one pool name for every family of the Service; a dual-stack Service needs it in at
        # least one family (the other family's lack is the sync's to report: it depends on
        # ipFamilyPolicy)
        name = ann[POOLSELECT].strip()
        by_family = {4: pools4, 6: pools6}
        if not any(name in by_family[f] for f in families):
            known = {p for f in families for p in by_family[f]}
            fams = " or ".join(f"IPv{f}" for f in families)
            problems.append(f"{POOLSELECT}={name!r}: no such {fams} pool "
                            f"(have {', '.join(sorted(known)) or 'none'})")
        o["pool"] = name
    if SECONDARYIPS in ann:
        # kube-loxilb's form: "ip1,ip2" (at most 3); they go on the Service's sctp rules
        ips: list[str] = []
        for part in (x.strip() for x in ann[SECONDARYIPS].split(",")):
            try:
                ips.append(str(ipaddress.ip_address(part)))
            except ValueError:
                problems.append(f"{SECONDARYIPS}: {part!r} is not an IP address")
        if len(ips) > MAX_SECONDARY_IPS:
            problems.append(f"{SECONDARYIPS}: at most {MAX_SECONDARY_IPS} addresses")
        o["secondary_ips"] = tuple(ips)
    if USEPODNETWORK in ann:
        o["use_pod_network"] = _yesno(problems, USEPODNETWORK, ann[USEPODNETWORK])
    if PREFLOCALPOD in ann:
        o["pref_local_pod"] = _yesno(problems, PREFLOCALPOD, ann[PREFLOCALPOD])
    if NODELABEL in ann:
        v = ann[NODELABEL].strip()
        if not _LABEL_KEY.match(v):
            problems.append(f"{NODELABEL}={ann[NODELABEL]!r}: not a label key")
        o["node_label"] = v
    if ZONESELECT in ann:
        o["zone_select"] = ann[ZONESELECT].strip()
    o["bgp"] = cfg.set_bgp != 0
    if BGP in ann:
        v = ann[BGP].strip().lower()
        if v in ("true", "yes"):
            o["bgp"] = True
        elif v in ("false", "no"):
            o["bgp"] = False
        else:
            problems.append(f"{BGP}={ann[BGP]!r}: expected true or false")
    if problems:
        raise AnnotationError(problems)
    return ServiceOptions(**o)
