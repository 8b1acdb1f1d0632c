"""Whole-configuration copies, without I/O: what `GET /config/export` writes, what
`POST /config/import` reads, and what `pyloxi save` / `pyloxi apply` (loxicmd's) write and send.

Everything is driven by two tables of components, each entry naming the list call and the create
call of one kind of object; adding a kind of object to the backups is one entry here:

- EXPORTED: loxilb's export file (handler/backup.go `DumpFile`): keys `loadbalancer`, `cluster`,
  `endpoint`, `firewall`, `mirror`, `policy`, `timestamp`, `version`, every entry written with
  loxilb's *internal* `common.*Mod` field names (`lbsec`, `path`, `inactiveTimeout`, `haState`,
  `Ident`/`Info`/`Target` for mirrors and policers), so a file moves between loxilb and pyloxi.
- SAVED: loxicmd save's files (cmd/get/*dump): `lbconfig.txt`, `EPconfig.txt`, `FWconfig.txt`,
  `sessionconfig.txt`, `sessionulclconfig.txt`, `BFDconfig.txt`, and the bodies loxicmd apply
  re-POSTs from them (cmd/dump/apply.go).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from pyloxi.client.calls import Call, attr_list, loadbalancer_path, path_segment
from pyloxi.client.errors import Conflict, NotFound
from pyloxi.model.cluster import CIStatusEntry
from pyloxi.model.endpoint import EndPoint
from pyloxi.model.firewall import FirewallEntry
from pyloxi.model.lb import LoadBalancerEntry

Item = dict[str, Any]
Transform = Callable[[Item], Item]


def _same(item: Item) -> Item:
    return dict(item)


def _get(item: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The value of the first of `names` present, key letter case ignored (as Go's json)."""
    folded = {k.lower(): v for k, v in item.items() if isinstance(k, str)}
    for name in names:
        if name.lower() in folded:
            return folded[name.lower()]
    return default


def _obj(item: Mapping[str, Any], *names: str) -> dict[str, Any]:
    value = _get(item, *names)
    return dict(value) if isinstance(value, dict) else {}


def _renamed(item: Mapping[str, Any], names: Mapping[str, str], drop: frozenset[str] = frozenset()
             ) -> Item:
    """`item` with keys renamed (matched case-insensitively) and some dropped."""
    lower = {k.lower(): v for k, v in names.items()}
    return {lower.get(k.lower(), k): v for k, v in item.items() if k.lower() not in drop}


# ---- loadbalancer ------------------------------------------------------------------------------

# REST (swagger) name -> loxilb's internal LbServiceArg name, where they differ beyond letter case
_LB_TO_MOD: Final = {"security": "lbsec", "host": "path", "inactiveTimeOut": "inactiveTimeout"}
_LB_FROM_MOD: Final = {"lbsec": "security", "path": "host", "inactiveTimeout": "inactiveTimeOut"}
_EP_OUTPUT: Final = frozenset({"state", "counter", "counters"})


def lb_to_mod(item: Item) -> Item:
    """A listed rule (lbAttr entry) as loxilb's LbRuleMod."""
    out = dict(item)
    out["serviceArguments"] = _renamed(_obj(item, "serviceArguments"), _LB_TO_MOD)
    out["endpoints"] = [_renamed(ep, {"counter": "counters"})
                        for ep in _get(item, "endpoints", default=None) or []]
    return out


def lb_body(item: Item) -> Item:
    """The POST body of a rule from an LbRuleMod or a listed rule: REST names, without the
    output-only endpoint fields and null lists."""
    out: Item = {"serviceArguments": _renamed(_obj(item, "serviceArguments"), _LB_FROM_MOD)}
    out["endpoints"] = [{k: v for k, v in ep.items() if k.lower() not in _EP_OUTPUT}
                        for ep in _get(item, "endpoints", default=None) or []
                        if isinstance(ep, dict)]
    for key in ("secondaryIPs", "allowedSources"):
        value = _get(item, key)
        if value:
            out[key] = value
    return out


def lb_delete(item: Item) -> Call[None]:
    serv = _obj(item, "serviceArguments")
    params: dict[str, Any] = {"block": int(_get(serv, "block", default=0) or 0)}
    if _get(serv, "bgp"):
        params["bgp"] = "true"
    path = loadbalancer_path(str(_get(serv, "externalIP", default="")),
                             int(_get(serv, "port", default=0) or 0),
                             str(_get(serv, "protocol", default="tcp") or "tcp"),
                             port_max=int(_get(serv, "portMax", default=0) or 0),
                             host=str(_get(serv, "host", "path", default="") or ""))
    return Call("DELETE", path, params=params, done_if=(NotFound,))


# ---- cluster, endpoint, firewall, mirror, policy ------------------------------------------------


def cistate_to_mod(item: Item) -> Item:
    """A cistate entry as loxilb's HASMod {instance, haState, Addr}."""
    return {"instance": _get(item, "instance", default=""),
            "haState": _get(item, "haState", "state", default=""),
            "Addr": _get(item, "Addr", "vip", default="")}


def cistate_body(item: Item) -> Item:
    return {"instance": _get(item, "instance", default=""),
            "state": _get(item, "state", "haState", default=""),
            "vip": _get(item, "vip", "Addr", default="") or "0.0.0.0"}


_EP_KEYS: Final = ("hostName", "name", "inactiveReTries", "probeType", "probeReq", "probeResp",
                   "probeDuration", "probePort")
_EP_DEFAULTS: Final[dict[str, Any]] = {"inactiveReTries": 0, "probeDuration": 0, "probePort": 0}


def endpoint_body(item: Item) -> Item:
    """loxicmd's EndPointMod: the configurable fields of a listed endpoint (no delays/state)."""
    return {k: _get(item, k, default=_EP_DEFAULTS.get(k, "")) for k in _EP_KEYS}


def endpoint_delete(item: Item) -> Call[None]:
    params = {"name": _get(item, "name", default="") or "",
              "probe_type": _get(item, "probeType", default="") or "",
              "probe_port": _get(item, "probePort", default=0) or 0}
    return Call("DELETE", f"/config/endpoint/epipaddress/"
                          f"{path_segment(str(_get(item, 'hostName', default='')))}",
                params=params, done_if=(NotFound,))


_FW_RULE: Final[dict[str, Any]] = {
    "sourceIP": "", "destinationIP": "", "minSourcePort": 0, "maxSourcePort": 0,
    "minDestinationPort": 0, "maxDestinationPort": 0, "protocol": 0, "portName": "",
    "preference": 0}
_FW_OPTS: Final[dict[str, Any]] = {
    "drop": False, "trap": False, "redirect": False, "redirectPortName": "", "allow": False,
    "fwMark": 0, "record": False, "doSnat": False, "toIP": "", "toPort": 0, "onDefault": False,
    "counter": ""}


def firewall_body(item: Item) -> Item:
    """loxicmd's FwRuleMod, every field (as its struct marshals), in its order."""
    rule, opts = _obj(item, "ruleArguments"), _obj(item, "opts")
    return {"ruleArguments": {k: _get(rule, k, default=d) for k, d in _FW_RULE.items()},
            "opts": {k: _get(opts, k, default=d) for k, d in _FW_OPTS.items()}}


def firewall_delete(item: Item) -> Call[None]:
    rule = _obj(item, "ruleArguments")
    params = {k: _get(rule, k) for k in _FW_RULE if _get(rule, k) not in (None, "", 0)}
    return Call("DELETE", "/config/firewall", params=params, done_if=(NotFound,))


def _ident_delete(base: str, *names: str) -> Callable[[Item], Call[None]]:
    def delete(item: Item) -> Call[None]:
        ident = str(_get(item, *names, default=""))
        return Call("DELETE", f"{base}/ident/{path_segment(ident)}", done_if=(NotFound,))
    return delete


def _nested(top: Mapping[str, str], inner: Mapping[str, Mapping[str, str]]) -> Transform:
    """A transform renaming top-level keys (`top`) and the keys of nested objects (`inner`,
    keyed by the new top-level name)."""
    def move(item: Item) -> Item:
        out = _renamed(item, top)
        for key, names in inner.items():
            if isinstance(out.get(key), dict):
                out[key] = _renamed(out[key], names)
        return out
    return move


# swagger MirrorEntry / PolicyEntry <-> loxilb's MirrMod / PolMod (no JSON tags: Go names)
_MIRR_INFO: Final = {"type": "MirrType", "port": "MirrPort", "vlan": "MirrVlan",
                     "remoteIP": "MirrRip", "sourceIP": "MirrSip", "tunnelID": "MirrTid"}
_MIRR_OBJ: Final = {"attachment": "AttachMent", "mirrObjName": "MirrObjName"}
_POL_INFO: Final = {"type": "PolType", "colorAware": "ColorAware",
                    "committedInfoRate": "CommittedInfoRate", "peakInfoRate": "PeakInfoRate",
                    "committedBlkSize": "CommittedBlkSize", "excessBlkSize": "ExcessBlkSize"}
_POL_OBJ: Final = {"attachment": "AttachMent", "polObjName": "PolObjName"}


def _flip(names: Mapping[str, str]) -> dict[str, str]:
    return {v: k for k, v in names.items()}


mirror_to_mod = _nested({"mirrorIdent": "Ident", "mirrorInfo": "Info", "targetObject": "Target"},
                        {"Info": _MIRR_INFO, "Target": _MIRR_OBJ})
mirror_body = _nested({"Ident": "mirrorIdent", "Info": "mirrorInfo", "Target": "targetObject"},
                      {"mirrorInfo": _flip(_MIRR_INFO), "targetObject": _flip(_MIRR_OBJ)})
policy_to_mod = _nested({"policyIdent": "Ident", "policyInfo": "Info", "targetObject": "Target"},
                        {"Info": _POL_INFO, "Target": _POL_OBJ})
policy_body = _nested({"Ident": "policyIdent", "Info": "policyInfo", "Target": "targetObject"},
                      {"policyInfo": _flip(_POL_INFO), "targetObject": _flip(_POL_OBJ)})


# ---- the export/import table --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exported:
    """One component of GET /config/export and POST /config/import."""

    name: str                     # key in the file, word of `?components=`
    get_path: str                 # the list call
    list_key: str                 # its list's key ({"lbAttr": [...]})
    post_path: str                # the create call, one POST per entry
    to_mod: Transform = _same     # listed entry -> the file's (loxilb *Mod) form
    to_body: Transform = _same    # the file's form (or a listed entry) -> the POST body
    delete: Callable[[Item], Call[None]] | None = None  # cleared by an import (None: kept)
    model: type[BaseModel] | None = None  # checks a body before anything changes

    def list_call(self) -> Call[list[Item]]:
        return Call("GET", self.get_path, read=lambda d: attr_list(d, self.list_key))


# loxilb's order (AddImportConfiguration): rules, cluster, endpoints, firewall, mirror, policy.
EXPORTED: Final[tuple[Exported, ...]] = (
    Exported("loadbalancer", "/config/loadbalancer/all", "lbAttr", "/config/loadbalancer",
             lb_to_mod, lb_body, lb_delete, LoadBalancerEntry),
    Exported("cluster", "/config/cistate/all", "Attr", "/config/cistate",
             cistate_to_mod, cistate_body, None, CIStatusEntry),
    Exported("endpoint", "/config/endpoint/all", "Attr", "/config/endpoint",
             _same, endpoint_body, endpoint_delete, EndPoint),
    Exported("firewall", "/config/firewall/all", "fwAttr", "/config/firewall",
             _same, firewall_body, firewall_delete, FirewallEntry),
    Exported("mirror", "/config/mirror/all", "mirrAttr", "/config/mirror",
             mirror_to_mod, mirror_body, _ident_delete("/config/mirror", "mirrorIdent", "Ident")),
    Exported("policy", "/config/policy/all", "polAttr", "/config/policy",
             policy_to_mod, policy_body, _ident_delete("/config/policy", "policyIdent", "Ident")),
)
EXPORTED_BY_NAME: Final = {c.name: c for c in EXPORTED}
# loxilb clears in this order (DeleteAllConfiguration): rules, firewall, mirror, policy, endpoints
CLEAR_ORDER: Final = ("loadbalancer", "firewall", "mirror", "policy", "endpoint")


class BadConfigFile(ValueError):
    """An import file that cannot be applied (nothing was changed)."""


def components_from_query(text: str | None) -> tuple[Exported, ...]:
    """`?components=loadbalancer,firewall` (empty or absent: all)."""
    words = [w.strip().lower() for w in (text or "").split(",") if w.strip()]
    unknown = [w for w in words if w not in EXPORTED_BY_NAME]
    if unknown:
        raise BadConfigFile(f"unknown component {unknown[0]!r}: choose from "
                            f"{', '.join(EXPORTED_BY_NAME)}")
    return tuple(c for c in EXPORTED if not words or c.name in words)


def read_import(data: Any) -> dict[str, list[Item]]:
    """The entries of an export file, per component, as POST bodies, each checked by its wire
    model: a BadConfigFile names the first that does not fit."""
    if not isinstance(data, dict):
        raise BadConfigFile("the configuration must be a JSON object (loxilb's export file)")
    out: dict[str, list[Item]] = {}
    for comp in EXPORTED:
        items = _get(data, comp.name)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BadConfigFile(f"{comp.name}: must be a list of objects")
        bodies = [comp.to_body(i) for i in items]
        if comp.model is not None:
            for n, body in enumerate(bodies):
                try:
                    comp.model.model_validate(body)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"]) or "entry"
                    raise BadConfigFile(f"{comp.name}[{n}]: {where}: {first['msg']}") from None
        out[comp.name] = bodies
    return out


# ---- loxicmd save / apply -----------------------------------------------------------------------

_SAVED_SERVICE: Final[tuple[tuple[str, tuple[str, ...], Any, bool], ...]] = (
    # (loxicmd's key, names read from the listing, default, omitempty): LoadBalancerService
    ("externalIP", ("externalIP",), "", False), ("port", ("port",), 0, False),
    ("portMax", ("portMax",), 0, True), ("protocol", ("protocol",), "", False),
    ("sel", ("sel",), 0, False), ("mode", ("mode",), 0, False),
    ("BGP", ("bgp",), False, False), ("Monitor", ("monitor",), False, False),
    ("inactiveTimeOut", ("inactiveTimeOut",), 0, False), ("block", ("block",), 0, False),
    ("managed", ("managed",), False, True), ("name", ("name",), "", True),
    ("snat", ("snat",), False, True), ("oper", ("oper",), 0, True),
    ("security", ("security", "lbsec"), 0, True), ("host", ("host", "path"), "", True),
    ("proxyprotocolv2", ("proxyprotocolv2",), False, False), ("egress", ("egress",), False, False),
)


def _saved_service(serv: Mapping[str, Any]) -> Item:
    out: Item = {}
    for key, names, default, omitempty in _SAVED_SERVICE:
        value = _get(serv, *names, default=default)
        if omitempty and not value:
            continue
        out[key] = value
    return out


def saved_lb(items: list[Item]) -> Item:
    """lbconfig.txt: loxicmd's LoadBalancerModel of each rule that is not managed (k8s), snat
    or ipvs-made; endpoint counters blanked; privateIP and probe fields are not saved."""
    rules = []
    for item in items:
        serv = _obj(item, "serviceArguments")
        if _get(serv, "managed") or _get(serv, "snat") or "ipvs" in str(_get(serv, "name") or ""):
            continue
        rules.append({
            "serviceArguments": _saved_service(serv),
            "secondaryIPs": _get(item, "secondaryIPs"),
            "allowedSources": _get(item, "allowedSources"),
            "endpoints": [{"endpointIP": _get(ep, "endpointIP", default=""),
                           "targetPort": _get(ep, "targetPort", default=0),
                           "weight": _get(ep, "weight", default=0),
                           "state": _get(ep, "state", default=""), "counter": ""}
                          for ep in _get(item, "endpoints", default=None) or []],
        })
    return {"lbAttr": rules}


def apply_lb_body(item: Item) -> Item:
    """What `loxicmd apply --lb` POSTs for a saved rule: only externalIP, protocol, port, sel,
    mode, BGP and the endpoints (ip, port, weight); the rest at Go's zero values."""
    serv = _obj(item, "serviceArguments")
    return {
        "serviceArguments": {
            "externalIP": _get(serv, "externalIP", default=""),
            "port": _get(serv, "port", default=0),
            "protocol": _get(serv, "protocol", default=""),
            "sel": _get(serv, "sel", default=0), "mode": _get(serv, "mode", default=0),
            "BGP": _get(serv, "BGP", default=False), "Monitor": False, "inactiveTimeOut": 0,
            "block": 0, "proxyprotocolv2": False, "egress": False},
        "secondaryIPs": None, "allowedSources": None,
        "endpoints": [{"endpointIP": _get(ep, "endpointIP", default=""),
                       "targetPort": _get(ep, "targetPort", default=0),
                       "weight": _get(ep, "weight", default=0), "state": "", "counter": ""}
                      for ep in _get(item, "endpoints", default=None) or []],
    }


def apply_lb_full_body(item: Item) -> Item:
    """`pyloxi apply --lb F --full`: every saved field (name, block, portMax, timeouts, ...),
    as loxilb itself reads lbconfig.txt at startup."""
    return lb_body(item)


@dataclass(frozen=True, slots=True)
class Saved:
    """One loxicmd save file and its apply."""

    flag: str                      # save/apply option (--lb, --firewall, ...)
    get_path: str
    list_key: str
    post_path: str
    file_name: str
    to_file: Callable[[list[Item]], Item]  # the listed entries -> the file's JSON
    to_body: Transform = _same     # a saved entry -> what apply POSTs

    def list_call(self) -> Call[list[Item]]:
        return Call("GET", self.get_path, read=lambda d: attr_list(d, self.list_key))


def _keyed(key: str, each: Transform = _same) -> Callable[[list[Item]], Item]:
    return lambda items: {key: [each(i) for i in items]}


# loxicmd save's order (-a): lb, session, ulcl, firewall, endpoint, bfd.
SAVED: Final[tuple[Saved, ...]] = (
    Saved("lb", "/config/loadbalancer/all", "lbAttr", "/config/loadbalancer", "lbconfig.txt",
          saved_lb, apply_lb_body),
    Saved("session", "/config/session/all", "sessionAttr", "/config/session",
          "sessionconfig.txt", _keyed("sessionAttr")),
    Saved("ulcl", "/config/sessionulcl/all", "ulclAttr", "/config/sessionulcl",
          "sessionulclconfig.txt", _keyed("ulclAttr")),
    Saved("firewall", "/config/firewall/all", "fwAttr", "/config/firewall", "FWconfig.txt",
          _keyed("fwAttr", firewall_body), firewall_body),
    Saved("endpoint", "/config/endpoint/all", "Attr", "/config/endpoint", "EPconfig.txt",
          _keyed("Attr", endpoint_body), endpoint_body),
    Saved("bfd", "/config/bfd/all", "Attr", "/config/bfd", "BFDconfig.txt", _keyed("Attr")),
)
SAVED_BY_FLAG: Final = {s.flag: s for s in SAVED}

# loxicmd apply -f: Kubernetes-style kinds -> (create path, its metadata key for the path)
_KINDS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("loadbalancer", "lb"), "/config/loadbalancer"),
    (("endpoint", "ep", "endpoints"), "/config/endpoint"),
    (("fdb",), "/config/fdb"),
    (("firewall", "fw", "firewalls"), "/config/firewall"),
    (("ipv4address", "ipv4", "ipaddress", "ip"), "/config/ipv4address"),
    (("mirror", "mirr", "mirrors"), "/config/mirror"),
    (("nei", "neigh", "neighbor"), "/config/neighbor"),
    (("policy", "pol", "policys", "pols", "polices"), "/config/policy"),
    (("route",), "/config/route"),
    (("session", "sessions"), "/config/session"),
    (("sessionulcl", "ulcl", "sessionulcls", "ulcls"), "/config/sessionulcl"),
    (("vlanmember", "vlan-member", "vlan_member"), "/config/vlan/{vid}/member"),
    (("vlan",), "/config/vlan"),
    (("vxlanpeer", "vxlan-peer", "vxlan_peer"), "/config/tunnel/vxlan/{vxlanID}/peer"),
    (("vxlan",), "/config/tunnel/vxlan"),
    (("bfd",), "/config/bfd"),
)


def yaml_call(doc: Any) -> Call[None]:
    """The create call of one `apply -f` document ({apiVersion, kind, metadata, spec})."""
    if not isinstance(doc, dict):
        raise BadConfigFile("a document must be a mapping with kind and spec")
    kind = str(doc.get("kind") or "")
    path = next((p for names, p in _KINDS if kind.lower() in names), None)
    if path is None:
        raise BadConfigFile(f"kind {kind!r} is not supported")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise BadConfigFile(f"{kind}: spec must be a mapping")
    meta = doc.get("metadata") or {}
    if "{" in path:
        key = path[path.index("{") + 1:path.index("}")]
        value = meta.get(key) if isinstance(meta, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadConfigFile(f"{kind}: metadata.{key} (a number) is needed")
        path = path.replace("{" + key + "}", str(value))
    if path == "/config/loadbalancer":
        # loxicmd's yaml names the host URL `path` (LoadBalancerService yaml tag)
        spec = lb_body(spec)
    return Call("POST", path, body=spec)


# ---- loxicmd save --ip / apply --per-intf: ipconfig/<interface>/ ---------------------------------

IPCONFIG_LISTS: Final = (("ports", "/config/port/all", "portAttr"),
                         ("addresses", "/config/ipv4address/all", "ipAttr"),
                         ("neighbors", "/config/neighbor/all", "neighborAttr"),
                         ("routes", "/config/route/all", "routeAttr"))


def _route_dev(gateway: str, networks: Mapping[str, list[ipaddress.IPv4Network]]) -> str | None:
    """The interface whose subnet holds the gateway (the route's own device is not listed)."""
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError:
        return None
    return next((dev for dev, nets in networks.items() if any(gw in n for n in nets)), None)


def ipconfig_files(lists: Mapping[str, list[Item]]) -> dict[str, dict[str, str]]:
    """loxicmd's ipconfig/<if>/ files from the API's listings ({name: [entries]} as named in
    IPCONFIG_LISTS): `type` (phy), `mtu` (when not 1500), `ipv4addr` ("a.b.c.d/n" lines),
    `ipv4neigh` ("ip lladdr mac"), `ipv4route` ("dst via gw": static routes only, under the
    interface whose subnet holds the gateway). loopback is left out."""
    files: dict[str, dict[str, list[str]]] = {}
    networks: dict[str, list[ipaddress.IPv4Network]] = {}
    for port in lists.get("ports", []):
        name = str(_get(port, "portName", default=""))
        if not name or name == "lo":
            continue
        entry = files.setdefault(name, {"type": ["phy"]})
        mtu = _get(_obj(port, "portHardwareInformation"), "mtu", default=0)
        if mtu and mtu != 1500:
            entry["mtu"] = [str(mtu)]
    for item in lists.get("addresses", []):
        dev = str(_get(item, "dev", default=""))
        if dev not in files:
            continue
        for addr in _get(item, "ipAddress", default=None) or []:
            iface = ipaddress.ip_interface(addr)
            if iface.version == 4:
                files[dev].setdefault("ipv4addr", []).append(str(addr))
                networks.setdefault(dev, []).append(iface.network)
    for item in lists.get("neighbors", []):
        dev = str(_get(item, "dev", default=""))
        if dev in files:
            files[dev].setdefault("ipv4neigh", []).append(
                f"{_get(item, 'ipAddress')} lladdr {_get(item, 'macAddress')}")
    for item in lists.get("routes", []):
        gateway = str(_get(item, "gateway", default="") or "")
        if str(_get(item, "protocol", default="")) != "static" or not gateway or "," in gateway:
            continue
        where = _route_dev(gateway, networks)
        if where is not None:
            files[where].setdefault("ipv4route", []).append(
                f"{_get(item, 'destinationIPNet')} via {gateway}")
    return {dev: {name: "".join(f"{line}\n" for line in lines) if name not in ("type", "mtu")
                  else lines[0] for name, lines in entry.items()}
            for dev, entry in files.items()}


def per_intf_calls(ifname: str, files: Mapping[str, str], *, routes_only: bool = False
                   ) -> list[Call[None]]:
    """What `apply --per-intf IF [-r]` sends for one interface's files: loxicmd runs
    `ip addr add`, `ip neigh add ... permanent`, `ip route replace ... proto static`; pyloxi
    makes the same changes through the API (an entry that is there already is no failure)."""
    calls: list[Call[None]] = []

    def lines(name: str) -> list[list[str]]:
        return [line.split() for line in files.get(name, "").splitlines() if line.strip()]

    if not routes_only:
        for words in lines("ipv4addr"):
            calls.append(Call("POST", "/config/ipv4address",
                              body={"dev": ifname, "ipAddress": words[0]}, done_if=(Conflict,)))
        for words in lines("ipv4neigh"):
            if len(words) < 3 or words[1] != "lladdr":
                raise BadConfigFile(f"{ifname}/ipv4neigh: {' '.join(words)!r} is not "
                                    "'IP lladdr MAC'")
            calls.append(Call("POST", "/config/neighbor",
                              body={"ipAddress": words[0], "dev": ifname,
                                    "macAddress": words[2]}, done_if=(Conflict,)))
    for words in lines("ipv4route"):
        if len(words) < 3 or words[1] != "via":
            raise BadConfigFile(f"{ifname}/ipv4route: {' '.join(words)!r} is not 'PREFIX via GW'")
        calls.append(Call("POST", "/config/route",
                          body={"destinationIPNet": words[0], "gateway": words[2],
                                "protocol": "static"}, done_if=(Conflict,)))
    return calls
