"""BGP policies (loxilb's /config/bgp/policy/*): the checks of pyloxi.bgp.policy, then the REST
routes in front of a real gobgpd 3.10 on loopback (as tests/unit/test_bgp.py does): what gobgpd
holds after each call, refusals that change nothing, persistence and re-application."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.test_bgp import Rig, free_port
from tests.waiting import wait_until

from pyloxi.api import create_app
from pyloxi.api.bgp import bgp_router
from pyloxi.bgp import BgpGlobal, BgpNeighbor, BgpSpeaker, Timers
from pyloxi.bgp.gobgp import GobgpClient
from pyloxi.bgp.policy import PolicyBook
from pyloxi.model.bgp import (
    BGPApplyPolicyToNeighborMod,
    BGPPolicyDefinedSetsMod,
    BGPPolicyDefinitionsMod,
)
from pyloxi.model.errors import Conflict, InvalidInput, NotFound

POL = "/netlox/v1/config/bgp/policy"
needs_gobgpd = pytest.mark.skipif(shutil.which("gobgpd") is None,
                                  reason="needs gobgpd (scripts/install-deps)")


def prefix_set(name: str, *prefixes: tuple[str, str]) -> dict[str, Any]:
    return {"name": name, "prefixList": [{"ipPrefix": p, "masklengthRange": r}
                                         for p, r in prefixes]}


def reject_policy(name: str, pset: str) -> dict[str, Any]:
    return {"name": name, "statements": [{
        "conditions": {"matchPrefixSet": {"prefixSet": pset, "matchSetOption": "any"}},
        "actions": {"routeDisposition": "reject-route"}}]}


def apply(ip: str, *policies: str, kind: str = "export", action: str = "accept") -> dict:
    return {"ipAddress": ip, "policyType": kind, "policies": list(policies),
            "routeAction": action}


def book_with_policy() -> PolicyBook:
    book = PolicyBook()
    book.add_set("prefix", BGPPolicyDefinedSetsMod.model_validate(
        prefix_set("vips", ("10.9.9.0/24", "24..32"))))
    book.add_policy(BGPPolicyDefinitionsMod.model_validate(reject_policy("drop", "vips")))
    return book


# -- the checks, no gobgpd ----------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "body", "error", "why"), [
    ("prefix", prefix_set("a", ("10.0.0.0/33", "")), InvalidInput, "ipPrefix"),
    ("prefix", prefix_set("a", ("nope", "")), InvalidInput, "ipPrefix"),
    ("prefix", prefix_set("a", ("10.0.0.0/24", "16..32")), InvalidInput, "masklengthRange"),
    ("prefix", prefix_set("a", ("10.0.0.0/24", "28..25")), InvalidInput, "masklengthRange"),
    ("prefix", prefix_set("a", ("10.0.0.0/24", "24..33")), InvalidInput, "masklengthRange"),
    ("prefix", prefix_set("a", ("10.0.0.0/24", "24-32")), InvalidInput, "masklengthRange"),
    ("prefix", {"name": "a"}, InvalidInput, "prefixList is empty"),
    ("tag", {"name": "a", "List": ["x"]}, InvalidInput, "defineset_type"),
    ("neighbor", {"name": "a", "List": ["10.0.0.300"]}, InvalidInput, "neighbor set"),
    ("community", {"name": "_pyloxi-x", "List": ["65000:1"]}, InvalidInput, "pyloxi's"),
    ("community", {"name": "all", "List": ["65000:1"]}, InvalidInput, "'all'"),
])
def test_bad_defined_sets_are_refused(kind, body, error, why):
    book = PolicyBook()
    with pytest.raises(error, match=why):
        book.add_set(kind, BGPPolicyDefinedSetsMod.model_validate(body))
    assert book.sets == {}


def test_defined_sets_canonical_duplicates_and_deletion():
    book = PolicyBook()
    book.add_set("Prefix", BGPPolicyDefinedSetsMod.model_validate(
        prefix_set("p", ("10.1.2.3/24", ""), ("fd00::/64", "64..128"))))
    [entry] = book.get_sets("prefix", "all")
    assert entry.wire() == {"name": "p", "list": [], "prefixList": [
        {"ipPrefix": "10.1.2.0/24", "masklengthRange": "24..24"},
        {"ipPrefix": "fd00::/64", "masklengthRange": "64..128"}]}
    book.add_set("neigh", BGPPolicyDefinedSetsMod.model_validate(
        {"name": "n", "List": ["10.0.0.2"]}))
    assert book.get_sets("neighbor", "n")[0].members == ["10.0.0.2/32"]
    with pytest.raises(Conflict):
        book.add_set("prefix", BGPPolicyDefinedSetsMod.model_validate(
            prefix_set("p", ("10.0.0.0/8", ""))))
    with pytest.raises(NotFound):
        book.delete_set("prefix", "nope")
    with pytest.raises(NotFound):
        book.get_sets("prefix", "nope")
    book.add_policy(BGPPolicyDefinitionsMod.model_validate(reject_policy("drop", "p")))
    with pytest.raises(Conflict, match="used by policy 'drop'"):
        book.delete_set("prefix", "p")
    book.delete_policy("drop")
    book.delete_set("prefix", "p")
    assert book.get_sets("prefix", "all") == []


@pytest.mark.parametrize(("statement", "why"), [
    ({"conditions": {"matchPrefixSet": {"prefixSet": "nope"}}}, "no prefix set 'nope'"),
    ({"actions": {"routeDisposition": "drop-it"}}, "routeDisposition"),
    ({"actions": {"bgpActions": {"setMed": "ten"}}}, "setMed"),
    ({"actions": {"bgpActions": {"setNextHop": "router"}}}, "setNextHop"),
    ({"actions": {"bgpActions": {"setAsPathPrepend": {"as": "x", "repeatN": 1}}}},
     "setAsPathPrepend"),
    ({"conditions": {"bgpConditions": {"asPathLength": {"operator": "gt", "value": 1}}}},
     "operator"),
    ({"conditions": {"bgpConditions": {"afiSafiIn": ["l2vpn-evpn"]}}}, "afiSafiIn"),
    ({"conditions": {"matchPrefixSet": {"prefixSet": "vips", "matchSetOption": "some"}}},
     "matchSetOption"),
])
def test_bad_policies_are_refused(statement, why):
    book = book_with_policy()
    before = book.clone()
    with pytest.raises(InvalidInput, match=why):
        book.add_policy(BGPPolicyDefinitionsMod.model_validate(
            {"name": "p2", "statements": [statement]}))
    assert book == before


def test_policies_duplicates_and_statement_names():
    book = book_with_policy()
    assert [s.name for s in book.policies["drop"].statements] == ["drop_stmt0"]  # gobgpd's
    with pytest.raises(Conflict):
        book.add_policy(BGPPolicyDefinitionsMod.model_validate(reject_policy("drop", "vips")))
    with pytest.raises(Conflict, match="statement 'drop_stmt0'"):
        book.add_policy(BGPPolicyDefinitionsMod.model_validate(
            {"name": "other", "statements": [{"name": "drop_stmt0"}]}))
    with pytest.raises(NotFound):
        book.delete_policy("nope")


def test_assignments_and_gobgpd_image():
    book = book_with_policy()
    neighbors = {"10.0.0.2"}

    def req(body: dict[str, Any]) -> BGPApplyPolicyToNeighborMod:
        return BGPApplyPolicyToNeighborMod.model_validate(body)

    with pytest.raises(InvalidInput, match="no policy 'nope'"):
        book.apply(req(apply("global", "nope")), neighbors)
    with pytest.raises(NotFound, match="10.0.0.3"):
        book.apply(req(apply("10.0.0.3", "drop")), neighbors)
    with pytest.raises(InvalidInput, match="ipAddress"):
        book.apply(req(apply("router", "drop")), neighbors)
    with pytest.raises(InvalidInput, match="routeAction"):
        book.apply(req(apply("global", "drop", action="")), neighbors)
    assert book.assignments == {}
    book.apply(req(apply("10.0.0.2", "drop")), neighbors)
    with pytest.raises(Conflict):
        book.apply(req(apply("10.0.0.2", "drop")), neighbors)
    book.apply(req(apply("GLOBAL", "drop", kind="import", action="reject")), neighbors)
    with pytest.raises(Conflict, match="applied"):
        book.delete_policy("drop")

    image = book.image()
    assert image.chains == {"export": ["_pyloxi-export-10.0.0.2"], "import": ["drop"]}
    assert image.default == {"export": "accept", "import": "reject"}
    assert image.sets["neighbor"]["_pyloxi-nb-10.0.0.2"].members == ["10.0.0.2/32"]
    derived = next(p for p in image.policies if p.name == "_pyloxi-export-10.0.0.2")
    own, last = derived.statements
    assert own.conditions.match_prefix_set.prefix_set == "vips"
    assert own.conditions.match_neighbor_set.neighbor_set == "_pyloxi-nb-10.0.0.2"
    assert own.actions.route_disposition == "reject-route"
    assert last.conditions.match_neighbor_set.neighbor_set == "_pyloxi-nb-10.0.0.2"
    assert last.actions.route_disposition == "accept-route"

    with pytest.raises(NotFound):
        book.unapply(req(apply("10.0.0.2", "drop", kind="import")))
    with pytest.raises(NotFound):
        book.unapply(req(apply("10.0.0.2", "other")))
    book.unapply(req(apply("10.0.0.2", action="")))  # no policies listed: all of them
    assert list(book.assignments) == [("global", "import")]
    assert PolicyBook.from_json(json.loads(json.dumps(book.to_json()))) == book


# -- REST, with gobgpd -------------------------------------------------------------------------

@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    if shutil.which("gobgpd") is None:
        pytest.skip("needs gobgpd (scripts/install-deps)")
    r = Rig(str(tmp_path))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def http(rig: Rig) -> Iterator[TestClient]:
    app = create_app(object(), version="0.0.0", extra_routers=[bgp_router(rig.speaker)])
    with TestClient(app) as client:
        yield client


def ok(resp: Any) -> None:
    assert (resp.status_code, resp.json()) == (200, {"result": "Success"}), resp.text


@needs_gobgpd
def test_rest_policy_lifecycle_in_gobgpd(rig: Rig, http: TestClient):
    r = http.post(f"{POL}/definedsets/prefix", json=prefix_set("vip1", ("10.9.9.1/32", "")))
    assert r.status_code == 400 and "no global config" in r.json()["message"]
    rig.speaker.set_global(BgpGlobal(65001, "10.0.0.1"))
    rig.speaker.add_neighbor(BgpNeighbor("10.0.0.2", 65002))
    ok(http.post(f"{POL}/definedsets/prefix", json=prefix_set("vip1", ("10.9.9.1/32", ""))))
    ok(http.post(f"{POL}/definedsets/community", json={"name": "c1", "List": ["65000:100"]}))
    ok(http.post(f"{POL}/definitions", json=reject_policy("drop-vip1", "vip1")))
    ok(http.post(f"{POL}/definitions", json={"name": "med", "statements": [{
        "name": "med-s", "conditions": {"bgpConditions": {
            "matchCommunitySet": {"communitySet": "c1", "matchSetOptions": "any"}}},
        "actions": {"bgpActions": {"setMed": "50", "setLocalPerf": 200}}}]}))
    assert sorted(rig.gobgp.list_policies()) == ["drop-vip1", "med"]

    got = http.get(f"{POL}/definedsets/prefix/all").json()
    assert got == {"definedsetsAttr": [{"name": "vip1", "list": [], "prefixList": [
        {"ipPrefix": "10.9.9.1/32", "masklengthRange": "32..32"}]}]}
    assert http.get(f"{POL}/definedsets/community/c1").json()["definedsetsAttr"][0][
        "list"] == ["65000:100"]
    [drop, med] = http.get(f"{POL}/definitions/all").json()["bgpPolicyAttr"]
    assert drop["name"] == "drop-vip1" and med["name"] == "med"
    assert med["statements"][0]["actions"]["bgpActions"]["setMed"] == "50"
    assert drop["statements"][0]["conditions"]["matchPrefixSet"]["prefixSet"] == "vip1"

    ok(http.post(f"{POL}/apply", json=apply("10.0.0.2", "drop-vip1")))
    ok(http.post(f"{POL}/apply", json=apply("global", "med", kind="import", action="reject")))
    assert rig.gobgp.get_assignment("export") == (["_pyloxi-export-10.0.0.2"], "accept")
    assert rig.gobgp.get_assignment("import") == (["med"], "reject")
    assert "_pyloxi" not in json.dumps(http.get(f"{POL}/definitions/all").json())
    assert http.get(f"{POL}/definedsets/neighbor/all").json() == {"definedsetsAttr": []}

    # refusals: nothing changes, in gobgpd either
    assert http.post(f"{POL}/apply", json=apply("10.0.0.2", "drop-vip1")).status_code == 409
    assert http.post(f"{POL}/apply", json=apply("10.0.0.2", "nope")).status_code == 400
    assert http.post(f"{POL}/apply", json=apply("10.0.0.7", "med")).status_code == 404
    assert http.delete(f"{POL}/definitions/drop-vip1").status_code == 409
    assert http.delete(f"{POL}/definedsets/prefix/vip1").status_code == 409
    assert http.delete(f"{POL}/definedsets/prefix/nope").status_code == 404
    assert http.delete(f"{POL}/definitions/nope").status_code == 404
    assert http.post(f"{POL}/definedsets/nosuch", json={"name": "x", "List": ["1"]}
                     ).status_code == 400
    r = http.post(f"{POL}/definedsets/aspath", json={"name": "bad", "List": ["(unclosed"]})
    assert r.status_code == 400 and "regular expression" in r.json()["message"]  # gobgpd
    assert http.get(f"{POL}/definedsets/aspath/all").json() == {"definedsetsAttr": []}
    assert rig.gobgp.get_assignment("export") == (["_pyloxi-export-10.0.0.2"], "accept")
    assert sorted(rig.gobgp.list_policies()) == ["_pyloxi-export-10.0.0.2", "drop-vip1", "med"]

    # loxilb's DELETE body needs no routeAction; no policies listed: all of that direction
    r = http.request("DELETE", f"{POL}/apply",
                     json={"ipAddress": "10.0.0.2", "policyType": "export", "policies": []})
    ok(r)
    assert rig.gobgp.get_assignment("export") == ([], "accept")
    assert http.request("DELETE", f"{POL}/apply", json=apply("10.0.0.2", "drop-vip1")
                        ).status_code == 404
    ok(http.request("DELETE", f"{POL}/apply", json=apply("global", "med", kind="import")))
    assert rig.gobgp.get_assignment("import") == ([], "accept")
    ok(http.delete(f"{POL}/definitions/drop-vip1"))
    ok(http.delete(f"{POL}/definedsets/prefix/vip1"))
    assert rig.gobgp.list_policies() == ["med"]


@needs_gobgpd
def test_policies_survive_a_gobgpd_restart_and_a_speaker_restart(tmp_path):
    path = tmp_path / "bgp.json"
    api = f"127.0.0.1:{free_port()}"

    def speaker() -> BgpSpeaker:
        s = BgpSpeaker(api, timers=Timers(3, 1, 1), config_path=path,
                       log_path=str(tmp_path / "gobgpd.log"))
        s.start()
        wait_until(lambda: s.up, 20, what="gobgpd up")
        return s

    def holds_policy(gobgp: GobgpClient) -> bool:
        try:
            # the neighbour's default (reject) is the last statement of its chain, not the
            # global default
            return gobgp.get_assignment("export") == (["_pyloxi-export-10.0.0.2"], "accept") \
                and "drop" in gobgp.list_policies()
        except Exception:
            return False

    first = speaker()
    gobgp = GobgpClient(api)
    try:
        first.set_global(BgpGlobal(65001, "10.0.0.1"))
        first.add_neighbor(BgpNeighbor("10.0.0.2", 65002))
        book = book_with_policy()
        first.api_add_defined_set("prefix", book.sets["prefix"]["vips"])
        first.api_add_policy(book.policies["drop"])
        first.api_apply_policy(BGPApplyPolicyToNeighborMod.model_validate(
            apply("10.0.0.2", "drop", action="reject")))
        assert holds_policy(gobgp)
        # a new global config restarts BGP in gobgpd, which empties its policies
        first.set_global(BgpGlobal(65001, "10.0.0.9"))
        assert holds_policy(gobgp)
        # gobgpd killed: restarted, given the policies back
        assert first._proc is not None
        first._proc.kill()
        wait_until(lambda: first.restarts >= 1 and first.up and holds_policy(gobgp), 60,
                   what="policies re-applied to the restarted gobgpd")
    finally:
        first.stop()
    assert json.loads(path.read_text())["policy"]["assignments"] == [
        {"target": "10.0.0.2", "direction": "export", "policies": ["drop"],
         "action": "reject"}]
    second = speaker()
    try:
        wait_until(lambda: holds_policy(gobgp), 30, what="policies restored from bgp.json")
    finally:
        gobgp.close()
        second.stop()


def test_rest_policy_without_bgp_is_503():
    app = create_app(object(), version="0.0.0", extra_routers=[bgp_router(None)])
    with TestClient(app) as http:
        for method, path in (("GET", "definitions/all"), ("GET", "definedsets/prefix/all"),
                             ("POST", "apply")):
            r = http.request(method, f"{POL}/{path}", json=apply("global", "x"))
            assert r.status_code == 503 and "--bgp" in r.json()["message"], (path, r.text)
