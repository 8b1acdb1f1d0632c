"""BGP policies (loxilb's /config/bgp/policy/*): defined sets, policy definitions and their
assignments, checked, and the image of them that gobgpd is given.

gobgpd 3.10 has per-neighbour policies for route-server clients only ("non-rs-client peer ...
doesn't have per peer policy"), and our neighbours are not route-server clients (they would
then not get the global RIB's paths, our VIPs). So an assignment to a neighbour becomes, in
gobgpd, part of the global assignment of its direction: each of its policies is copied with a
condition on a neighbour set holding that neighbour alone (on export gobgpd matches the
neighbour a route is sent to, on import the one it came from), and its default action becomes a
last statement for that neighbour. The copies (named "_pyloxi-...") come before the global
assignment's own policies; the API never shows them.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from pyloxi.model.bgp import (
    BGPApplyPolicyToNeighborMod,
    BGPPolicyDefinedSetGetEntry,
    BGPPolicyDefinedSetsMod,
    BGPPolicyDefinitionsMod,
    BGPPolicyDefinitionsStatement,
    BGPPolicyPrefix,
    MatchNeighborSet,
    PolicyActions,
    PolicyConditions,
)
from pyloxi.model.errors import Conflict, InvalidInput, NotFound

# loxilb's spellings of the set types (gobgpclient.go), folded to lower case
SET_TYPES = {"prefix": "prefix", "neighbor": "neighbor", "neigh": "neighbor", "nei": "neighbor",
             "community": "community", "extcommunity": "extcommunity",
             "largecommunity": "largecommunity", "aspath": "aspath"}
RESERVED = "_pyloxi"  # names of the derived objects
GLOBAL = "global"
DIRECTIONS = ("import", "export")
MATCH_OPTIONS = ("", "any", "all", "invert")
DISPOSITIONS = ("", "none", "accept-route", "reject-route")
AFI_SAFI = ("ipv4-unicast", "ipv6-unicast")
_MED = re.compile(r"[+-]?[0-9]{1,10}")


def set_type(name: str) -> str:
    t = SET_TYPES.get(name.lower())
    if t is None:
        raise InvalidInput(f"invalid defineset_type {name[:32]!r}: one of prefix, neighbor, "
                           "community, extcommunity, largecommunity, aspath")
    return t


def _name(kind: str, name: str) -> str:
    if not name:
        raise InvalidInput(f"bgp {kind}: name missing")
    if name.startswith(RESERVED):
        raise InvalidInput(f"bgp {kind} {name[:64]!r}: names starting with {RESERVED} are "
                           "pyloxi's")
    if name == "all":
        raise InvalidInput(f"bgp {kind}: 'all' names every {kind} (GET), not one")
    return name


def _prefix(p: BGPPolicyPrefix) -> BGPPolicyPrefix:
    try:
        net = ipaddress.ip_network(p.ip_prefix, strict=False)
    except ValueError:
        raise InvalidInput(f"invalid ipPrefix {p.ip_prefix[:64]!r}: not an IP prefix") from None
    lo = hi = net.prefixlen
    if p.masklength_range:
        m = re.fullmatch(r"([0-9]{1,3})\.\.([0-9]{1,3})", p.masklength_range)
        if m is None:
            raise InvalidInput(f"invalid masklengthRange {p.masklength_range!r}: "
                               "expected <min>..<max>")
        lo, hi = int(m.group(1)), int(m.group(2))
        if not net.prefixlen <= lo <= hi <= net.max_prefixlen:
            raise InvalidInput(f"invalid masklengthRange {p.masklength_range!r} for {net}: "
                               f"must be within {net.prefixlen}..{net.max_prefixlen}, min <= max")
    return BGPPolicyPrefix(ip_prefix=str(net), masklength_range=f"{lo}..{hi}")


def check_set(kind: str, s: BGPPolicyDefinedSetsMod) -> BGPPolicyDefinedSetsMod:
    """The set in canonical form (prefixes as networks with an explicit mask range)."""
    _name(f"{kind} set", s.name)
    if kind == "prefix":
        if not s.prefix_list:
            raise InvalidInput(f"bgp prefix set {s.name!r}: prefixList is empty")
        return BGPPolicyDefinedSetsMod(name=s.name, prefix_list=[_prefix(p)
                                                                 for p in s.prefix_list])
    if not s.members:
        raise InvalidInput(f"bgp {kind} set {s.name!r}: List is empty")
    members = list(s.members)
    if kind == "neighbor":
        try:
            members = [str(ipaddress.ip_network(m, strict=False)) for m in members]
        except ValueError as exc:
            raise InvalidInput(f"bgp neighbor set {s.name!r}: {exc}") from None
    elif any(not m for m in members):
        raise InvalidInput(f"bgp {kind} set {s.name!r}: empty entry in List")
    # communities, as paths: gobgpd parses them (its reason is the answer)
    return BGPPolicyDefinedSetsMod(name=s.name, members=members)


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value.lower() not in allowed:
        raise InvalidInput(f"invalid {what} {value[:32]!r}: one of "
                           f"{', '.join(a for a in allowed if a)}")


@dataclass
class Assignment:
    policies: list[str]
    action: str = ""  # "accept", "reject", "" (gobgpd's default: accept)


@dataclass
class PolicyBook:
    """What the API accepted. Every change is made on a copy (`clone`), which the speaker
    keeps only once gobgpd took its image."""

    sets: dict[str, dict[str, BGPPolicyDefinedSetsMod]] = field(default_factory=dict)
    policies: dict[str, BGPPolicyDefinitionsMod] = field(default_factory=dict)
    assignments: dict[tuple[str, str], Assignment] = field(default_factory=dict)

    def clone(self) -> PolicyBook:
        return copy.deepcopy(self)

    # -- defined sets -------------------------------------------------------------------------
    def add_set(self, kind: str, s: BGPPolicyDefinedSetsMod) -> None:
        kind = set_type(kind)
        s = check_set(kind, s)
        if s.name in self.sets.get(kind, {}):
            raise Conflict(f"bgp {kind} set {s.name!r} exists")
        self.sets.setdefault(kind, {})[s.name] = s

    def delete_set(self, kind: str, name: str) -> None:
        kind = set_type(kind)
        if name not in self.sets.get(kind, {}):
            raise NotFound(f"bgp {kind} set {name[:64]!r} not found")
        users = [p for p, d in self.policies.items() if (kind, name) in _set_refs(d)]
        if users:
            raise Conflict(f"bgp {kind} set {name!r} is used by policy {users[0]!r}")
        del self.sets[kind][name]

    def get_sets(self, kind: str, name: str) -> list[BGPPolicyDefinedSetGetEntry]:
        kind = set_type(kind)
        have = self.sets.get(kind, {})
        if name != "all" and name not in have:
            raise NotFound(f"bgp {kind} set {name[:64]!r} not found")
        return [BGPPolicyDefinedSetGetEntry(name=s.name, prefix_list=s.prefix_list,
                                            members=s.members)
                for n, s in sorted(have.items()) if name in ("all", n)]

    # -- definitions --------------------------------------------------------------------------
    def add_policy(self, d: BGPPolicyDefinitionsMod) -> None:
        _name("policy", d.name)
        if d.name in self.policies:
            raise Conflict(f"bgp policy {d.name!r} exists")
        if not d.statements:
            raise InvalidInput(f"bgp policy {d.name!r}: no statements")
        stmts = []
        for i, st in enumerate(d.statements):
            # gobgpd's own name for an unnamed statement, so a GET shows what it holds
            st = st.model_copy(update={"name": st.name or f"{d.name}_stmt{i}"})
            if st.name.startswith(RESERVED):
                raise InvalidInput(f"bgp policy {d.name!r}: statement names starting with "
                                   f"{RESERVED} are pyloxi's")
            _check_statement(d.name, st)
            stmts.append(st)
        names = {s.name for p in self.policies.values() for s in p.statements}
        for st in stmts:
            if st.name in names:
                raise Conflict(f"bgp policy {d.name!r}: statement {st.name!r} exists")
            names.add(st.name)
        d = BGPPolicyDefinitionsMod(name=d.name, statements=stmts)
        for kind, name in _set_refs(d):
            if name not in self.sets.get(kind, {}):
                raise InvalidInput(f"bgp policy {d.name!r}: no {kind} set {name!r}")
        self.policies[d.name] = d

    def delete_policy(self, name: str) -> None:
        if name not in self.policies:
            raise NotFound(f"bgp policy {name[:64]!r} not found")
        for (target, direction), a in self.assignments.items():
            if name in a.policies:
                raise Conflict(f"bgp policy {name!r} is applied ({direction}, {target})")
        del self.policies[name]

    # -- assignments --------------------------------------------------------------------------
    @staticmethod
    def target(ip: str, neighbors: set[str]) -> str:
        if ip.lower() == GLOBAL:
            return GLOBAL
        try:
            addr = str(ipaddress.ip_address(ip))
        except ValueError:
            raise InvalidInput(f"invalid ipAddress {ip[:64]!r}: a neighbor's address or "
                               "'global'") from None
        if addr not in neighbors:
            raise NotFound(f"bgp neighbor {addr} not found")
        return addr

    def apply(self, req: BGPApplyPolicyToNeighborMod, neighbors: set[str]) -> None:
        """loxilb's POST: the policies are added to the assignment's (gobgpd's
        AddPolicyAssignment), routeAction becomes its default action."""
        if not req.route_action:
            raise InvalidInput("bgp policy apply: routeAction missing (accept or reject)")
        target = self.target(req.ip_address, neighbors)
        for name in req.policies:
            if name not in self.policies:
                raise InvalidInput(f"bgp policy apply: no policy {name[:64]!r}")
            if target != GLOBAL:
                for st in self.policies[name].statements:
                    if st.conditions.match_neighbor_set.neighbor_set:
                        raise InvalidInput(
                            f"bgp policy {name!r} matches a neighbor set itself: apply it to "
                            "'global'")
        cur = self.assignments.get((target, req.policy_type), Assignment([]))
        seen = set(cur.policies)
        for name in req.policies:
            if name in seen:
                raise Conflict(f"bgp policy {name!r} is already applied ({req.policy_type}, "
                               f"{target})")
            seen.add(name)
        self.assignments[(target, req.policy_type)] = Assignment(
            [*cur.policies, *req.policies], req.route_action)

    def unapply(self, req: BGPApplyPolicyToNeighborMod) -> None:
        """loxilb's DELETE: the listed policies leave the assignment; none listed: all of it."""
        target = GLOBAL if req.ip_address.lower() == GLOBAL else req.ip_address
        if target != GLOBAL:
            try:
                target = str(ipaddress.ip_address(target))
            except ValueError:
                raise InvalidInput(f"invalid ipAddress {target[:64]!r}: a neighbor's address "
                                   "or 'global'") from None
        key = (target, req.policy_type)
        cur = self.assignments.get(key)
        if cur is None:
            raise NotFound(f"no bgp {req.policy_type} policy applied to {target}")
        missing = [p for p in req.policies if p not in cur.policies]
        if missing:
            raise NotFound(f"bgp policy {missing[0][:64]!r} is not applied "
                           f"({req.policy_type}, {target})")
        left = [p for p in cur.policies if p not in req.policies] if req.policies else []
        if left:
            self.assignments[key] = Assignment(left, cur.action)
        else:
            del self.assignments[key]

    # -- gobgpd's image -----------------------------------------------------------------------
    def image(self) -> Image:
        sets = {kind: dict(by_name) for kind, by_name in self.sets.items()}
        policies = dict(self.policies)
        chains: dict[str, list[str]] = {d: [] for d in DIRECTIONS}
        for (target, direction), a in sorted(self.assignments.items()):
            if target == GLOBAL:
                continue
            nset = f"{RESERVED}-nb-{target}"
            plen = ipaddress.ip_address(target).max_prefixlen
            sets.setdefault("neighbor", {})[nset] = BGPPolicyDefinedSetsMod(
                name=nset, members=[f"{target}/{plen}"])
            pname = f"{RESERVED}-{direction}-{target}"
            match = PolicyConditions(match_neighbor_set=MatchNeighborSet(neighbor_set=nset))
            stmts = []
            for p in a.policies:
                for st in self.policies[p].statements:
                    cond = st.conditions.model_copy(
                        update={"match_neighbor_set": match.match_neighbor_set})
                    stmts.append(st.model_copy(update={"name": f"{pname}-{st.name}",
                                                       "conditions": cond}))
            if a.action:
                stmts.append(BGPPolicyDefinitionsStatement(
                    name=f"{pname}-default", conditions=match,
                    actions=PolicyActions(route_disposition=f"{a.action}-route")))
            policies[pname] = BGPPolicyDefinitionsMod(name=pname, statements=stmts)
            chains[direction].append(pname)
        default: dict[str, str] = {}
        for direction in DIRECTIONS:
            g = self.assignments.get((GLOBAL, direction))
            if g is not None:
                chains[direction].extend(g.policies)
            default[direction] = g.action if g is not None and g.action else "accept"
        return Image(sets, list(policies.values()), chains, default)

    # -- on disk --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "sets": {k: [s.wire() for s in v.values()] for k, v in self.sets.items() if v},
            "policies": [p.wire() for p in self.policies.values()],
            "assignments": [{"target": t, "direction": d, "policies": a.policies,
                             "action": a.action}
                            for (t, d), a in self.assignments.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicyBook:
        """Raises on anything that no longer validates (the caller logs and starts empty:
        a policy half restored could let through what it was meant to stop)."""
        book = cls()
        for kind, sets in data.get("sets", {}).items():
            for s in sets:
                book.add_set(kind, BGPPolicyDefinedSetsMod.model_validate(s))
        for p in data.get("policies", []):
            book.add_policy(BGPPolicyDefinitionsMod.model_validate(p))
        for a in data.get("assignments", []):
            target, direction = str(a["target"]), str(a["direction"])
            if direction not in DIRECTIONS or (a["action"] not in ("", "accept", "reject")):
                raise ValueError(f"bad assignment {a!r}")
            for p in a["policies"]:
                if p not in book.policies:
                    raise ValueError(f"assignment of an unknown policy {p!r}")
            book.assignments[(target, direction)] = Assignment(list(a["policies"]),
                                                               str(a["action"]))
        return book


@dataclass(frozen=True)
class Image:
    """What gobgpd holds: every set and policy (the derived ones included), the global
    assignment's chain and default action per direction."""

    sets: dict[str, dict[str, BGPPolicyDefinedSetsMod]]
    policies: list[BGPPolicyDefinitionsMod]
    chains: dict[str, list[str]]
    default: dict[str, str]


def _set_refs(d: BGPPolicyDefinitionsMod) -> set[tuple[str, str]]:
    out = set()
    for st in d.statements:
        c, b = st.conditions, st.conditions.bgp_conditions
        for kind, name in (("prefix", c.match_prefix_set.prefix_set),
                           ("neighbor", c.match_neighbor_set.neighbor_set),
                           ("aspath", b.match_as_path_set.as_path_set),
                           ("community", b.match_community_set.community_set),
                           ("extcommunity", b.match_ext_community_set.community_set),
                           ("largecommunity", b.match_large_community_set.community_set)):
            if name:
                out.add((kind, name))
    return out


def _check_statement(policy: str, st: BGPPolicyDefinitionsStatement) -> None:
    c, b = st.conditions, st.conditions.bgp_conditions
    _choice("matchSetOption", c.match_prefix_set.match_set_option, MATCH_OPTIONS)
    _choice("matchSetOption", c.match_neighbor_set.match_set_option, MATCH_OPTIONS)
    for m in (b.match_as_path_set.match_set_options, b.match_community_set.match_set_options,
              b.match_ext_community_set.match_set_options,
              b.match_large_community_set.match_set_options):
        _choice("matchSetOptions", m, MATCH_OPTIONS)
    for afi in b.afi_safi_in:
        _choice("afiSafiIn", afi, AFI_SAFI)
    _choice("asPathLength operator", b.as_path_length.operator, ("", "eq", "ge", "le"))
    _choice("rpki", b.rpki, ("", "valid", "invalid", "not-found"))
    _choice("routeType", b.route_type, ("", "internal", "external", "local"))
    for nh in b.next_hop_in_list:
        try:
            ipaddress.ip_network(nh, strict=False)
        except ValueError:
            raise InvalidInput(f"invalid nextHopInList entry {nh[:64]!r}") from None
    a = st.actions.bgp_actions
    _choice("routeDisposition", st.actions.route_disposition, DISPOSITIONS)
    if a.set_med and not _MED.fullmatch(a.set_med):
        raise InvalidInput(f"invalid setMed {a.set_med!r}: a number, or +n / -n")
    if a.set_next_hop and a.set_next_hop not in ("self", "unchanged"):
        try:
            ipaddress.ip_address(a.set_next_hop)
        except ValueError:
            raise InvalidInput(f"invalid setNextHop {a.set_next_hop[:64]!r}: an IP address, "
                               "self or unchanged") from None
    for sc in (a.set_community, a.set_ext_community, a.set_large_community):
        _choice("setCommunity options", sc.options, ("", "add", "remove", "replace"))
    pp = a.set_as_path_prepend
    if pp.asn and (pp.asn != "last-as" and (not pp.asn.isdigit() or int(pp.asn) > 4294967295)):
        raise InvalidInput(f"invalid setAsPathPrepend as {pp.asn!r}: an AS number or last-as")
