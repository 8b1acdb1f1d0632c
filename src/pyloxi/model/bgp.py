"""BGP wire objects (loxilb swagger.yml: BGPGlobalConfig, BGPNeigh, BGPNeighGetEntry, the
BGPPolicy* objects)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pyloxi.model.base import Address, Name, WireModel, Word, wire_names
from pyloxi.model.fields import IPAddress, UInt32

__all__ = ["BGPApplyPolicyToNeighborMod", "BGPGlobalConfig", "BGPNeigh", "BGPNeighGetEntry",
           "BGPNeighList", "BGPPolicyDefinedSetGetEntry", "BGPPolicyDefinedSetList",
           "BGPPolicyDefinedSetsMod", "BGPPolicyDefinitionsList", "BGPPolicyDefinitionsMod",
           "BGPPolicyDefinitionsStatement", "BGPPolicyPrefix"]

ASN = Annotated[int, Field(ge=1, le=4294967295)]
# -1: do not listen (pyloxi's default: gobgpd connects out and never takes the host's 179)
ListenPort = Annotated[int, Field(ge=-1, le=65535)]


class BGPGlobalConfig(WireModel):
    """POST /config/bgp/global."""

    model_config = wire_names(router_id="routerId", local_as="localAs",
                              set_next_hop_self="SetNextHopSelf", listen_port="listenPort")

    router_id: IPAddress
    local_as: ASN
    set_next_hop_self: bool = False  # pyloxi always announces next-hop-self (0.0.0.0)
    listen_port: ListenPort = 0  # 0: not given -> -1 (no listener)


class BGPNeigh(WireModel):
    """POST /config/bgp/neigh."""

    model_config = wire_names(ip_address="ipAddress", remote_as="remoteAs",
                              remote_port="remotePort", set_multi_hop="setMultiHop")

    ip_address: IPAddress
    remote_as: ASN
    remote_port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: 179
    set_multi_hop: bool = False


class BGPNeighGetEntry(WireModel):
    model_config = wire_names(ip_address="ipAddress", remote_as="remoteAs", state="state",
                              updowntime="updowntime")

    ip_address: str = ""
    remote_as: UInt32 = 0
    state: str = ""
    updowntime: str = ""


class BGPNeighList(WireModel):
    model_config = wire_names(attr="bgpNeiAttr")

    attr: list[BGPNeighGetEntry] = []


# ---------------------------------------------------------------- policies (swagger.yml:
# BGPPolicyDefinedSets*, BGPPolicyDefinitions*, BGPApplyPolicyToNeighborMod). Every nested
# object defaults to its empty form: a GET answers the full shape, as loxilb's does, and an
# empty name means "no such condition".

MAX_POLICY_ITEMS = 4096  # entries of one list (prefixes, communities, statements, ...)
Items = Annotated[list[Name], Field(max_length=MAX_POLICY_ITEMS)]


class BGPPolicyPrefix(WireModel):
    model_config = wire_names(ip_prefix="ipPrefix", masklength_range="masklengthRange")

    ip_prefix: Address = ""
    masklength_range: Word = ""  # "24..32"; empty: the prefix's own length only


Prefixes = Annotated[list[BGPPolicyPrefix], Field(max_length=MAX_POLICY_ITEMS)]


class BGPPolicyDefinedSetsMod(WireModel):
    """POST /config/bgp/policy/definedsets/{defineset_type}."""

    model_config = wire_names(name="name", members="List", prefix_list="prefixList")

    name: Name
    members: Items = []
    prefix_list: Prefixes = []


class BGPPolicyDefinedSetGetEntry(WireModel):
    model_config = wire_names(name="name", prefix_list="prefixList", members="list")

    name: Name
    prefix_list: Prefixes = []
    members: Items = []


class BGPPolicyDefinedSetList(WireModel):
    model_config = wire_names(attr="definedsetsAttr")

    attr: list[BGPPolicyDefinedSetGetEntry] = []


class MatchPrefixSet(WireModel):
    model_config = wire_names(match_set_option="matchSetOption", prefix_set="prefixSet")

    match_set_option: Word = ""
    prefix_set: Name = ""


class MatchNeighborSet(WireModel):
    model_config = wire_names(match_set_option="matchSetOption", neighbor_set="neighborSet")

    match_set_option: Word = ""
    neighbor_set: Name = ""


class MatchAsPathSet(WireModel):
    model_config = wire_names(as_path_set="asPathSet", match_set_options="matchSetOptions")

    as_path_set: Name = ""
    match_set_options: Word = ""


class MatchCommunitySet(WireModel):
    model_config = wire_names(community_set="communitySet", match_set_options="matchSetOptions")

    community_set: Name = ""
    match_set_options: Word = ""


class AsPathLength(WireModel):
    model_config = wire_names(operator="operator", value="value")

    operator: Word = ""  # eq, ge, le; empty: no condition
    value: UInt32 = 0


class BgpConditions(WireModel):
    model_config = wire_names(
        afi_safi_in="afiSafiIn", as_path_length="asPathLength", match_as_path_set="matchAsPathSet",
        match_community_set="matchCommunitySet", match_ext_community_set="matchExtCommunitySet",
        match_large_community_set="matchLargeCommunitySet", next_hop_in_list="nextHopInList",
        rpki="rpki", route_type="routeType")

    afi_safi_in: Items = []
    as_path_length: AsPathLength = Field(default_factory=AsPathLength)
    match_as_path_set: MatchAsPathSet = Field(default_factory=MatchAsPathSet)
    match_community_set: MatchCommunitySet = Field(default_factory=MatchCommunitySet)
    match_ext_community_set: MatchCommunitySet = Field(default_factory=MatchCommunitySet)
    match_large_community_set: MatchCommunitySet = Field(default_factory=MatchCommunitySet)
    next_hop_in_list: Items = []
    rpki: Word = ""
    route_type: Word = ""


class PolicyConditions(WireModel):
    model_config = wire_names(bgp_conditions="bgpConditions",
                              match_neighbor_set="matchNeighborSet",
                              match_prefix_set="matchPrefixSet")

    bgp_conditions: BgpConditions = Field(default_factory=BgpConditions)
    match_neighbor_set: MatchNeighborSet = Field(default_factory=MatchNeighborSet)
    match_prefix_set: MatchPrefixSet = Field(default_factory=MatchPrefixSet)


class SetCommunity(WireModel):
    model_config = wire_names(options="options", set_community_method="setCommunityMethod")

    options: Word = ""  # add, remove, replace
    set_community_method: Items = []


class SetAsPathPrepend(WireModel):
    model_config = wire_names(asn="as", repeat_n="repeatN")

    asn: Word = ""  # an AS number, as a string (loxilb's)
    repeat_n: Annotated[int, Field(ge=0, le=255)] = 0


class BgpActions(WireModel):
    model_config = wire_names(
        set_med="setMed", set_next_hop="setNextHop", set_local_perf="setLocalPerf",
        set_community="setCommunity", set_ext_community="setExtCommunity",
        set_large_community="setLargeCommunity", set_as_path_prepend="setAsPathPrepend")

    set_med: Word = ""  # "100" replaces, "+10" / "-10" adds
    set_next_hop: Address = ""
    set_local_perf: UInt32 = 0  # loxilb's spelling
    set_community: SetCommunity = Field(default_factory=SetCommunity)
    set_ext_community: SetCommunity = Field(default_factory=SetCommunity)
    set_large_community: SetCommunity = Field(default_factory=SetCommunity)
    set_as_path_prepend: SetAsPathPrepend = Field(default_factory=SetAsPathPrepend)


class PolicyActions(WireModel):
    model_config = wire_names(route_disposition="routeDisposition", bgp_actions="bgpActions")

    route_disposition: Word = ""  # accept-route, reject-route, none
    bgp_actions: BgpActions = Field(default_factory=BgpActions)


class BGPPolicyDefinitionsStatement(WireModel):
    model_config = wire_names(name="name", conditions="conditions", actions="actions")

    name: Name = ""
    conditions: PolicyConditions = Field(default_factory=PolicyConditions)
    actions: PolicyActions = Field(default_factory=PolicyActions)


class BGPPolicyDefinitionsMod(WireModel):
    """POST /config/bgp/policy/definitions; an entry of GET .../definitions/all."""

    model_config = wire_names(name="name", statements="statements")

    name: Name = ""
    statements: Annotated[list[BGPPolicyDefinitionsStatement],
                          Field(max_length=MAX_POLICY_ITEMS)] = []


class BGPPolicyDefinitionsList(WireModel):
    model_config = wire_names(attr="bgpPolicyAttr")

    attr: list[BGPPolicyDefinitionsMod] = []


class BGPApplyPolicyToNeighborMod(WireModel):
    """POST|DELETE /config/bgp/policy/apply. ipAddress: a neighbour's address, or "global"
    (gobgp's global RIB: every neighbour). routeAction: the default for routes no statement
    decided (not needed to delete)."""

    model_config = wire_names(ip_address="ipAddress", policy_type="policyType",
                              policies="policies", route_action="routeAction")

    ip_address: Address
    policy_type: Literal["import", "export"]
    policies: Items = []
    route_action: Literal["accept", "reject", ""] = ""
