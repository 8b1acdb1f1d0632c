"""kube agent pieces without Kubernetes: flags/config file (and the token it sends), annotations,
IPAM, endpoints, rule bodies."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pyloxi.client import rule_body
from pyloxi.k8s import agent as agent_mod
from pyloxi.k8s import annotations as ann
from pyloxi.k8s import backends, reconcile, status
from pyloxi.k8s.agent import loxi_clients
from pyloxi.k8s.config import AgentConfig, ConfigError, parse_args, parse_pools
from pyloxi.k8s.ipam import AddressInUse, Ipam, PoolExhausted
from pyloxi.model.enums import NatMode, Selection

# ---- config -------------------------------------------------------------------------------


def test_flags():
    cfg = parse_args(["--loxiURL=http://127.0.0.1:1,http://127.0.0.1:2/",
                      "--cidrPools=defaultPool=20.0.0.0/24,pool2=30.0.0.1-30.0.0.9",
                      "--cidr6Pools=defaultPool=3ffe::/64", "--setUniqueIP",
                      "--setLBMode=2", "--zone=z1", "--kubeconfig=/k", "--resyncPeriod=7"])
    assert cfg.loxi_urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert cfg.unique_ip and cfg.lb_mode == 2 and cfg.zone == "z1"
    assert cfg.kubeconfig == "/k" and cfg.resync_period == 7.0
    assert parse_pools(cfg.cidr_pools, 4)["pool2"] == [(int.from_bytes(bytes([30, 0, 0, 1])),
                                                        int.from_bytes(bytes([30, 0, 0, 9])))]


def test_config_file_and_flag_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("loxiURL: [http://127.0.0.1:5]\nsetExclIPAM: true\nsetLBMode: 1\n"
                 "cidrPools: defaultPool=10.9.0.0/24\nclientConnection: {kubeconfig: /kc}\n"
                 "loxilbLoadBalancerClass: example.com/lb\nacceptNoClass: yes\n")
    cfg = parse_args(["--config", str(f), "--setLBMode=3"])
    assert cfg.loxi_urls == ["http://127.0.0.1:5"]
    assert cfg.unique_ip and cfg.lb_mode == 3  # the flag wins
    assert cfg.kubeconfig == "/kc" and cfg.lb_class == "example.com/lb" and cfg.accept_no_class
    cfg = parse_args(["--config", str(f), "--externalCIDR=172.16.0.0/28"])
    assert cfg.cidr_pools == "defaultPool=172.16.0.0/28"


@pytest.mark.parametrize("argv", [
    ["--setLBMode=9"], ["--loxiURL=ftp://x"], ["--cidrPools=nope"],
    ["--cidrPools=a=300.0.0.0/24"], ["--cidr6Pools=a=10.0.0.0/24"],
    ["--loadBalancerClass=noslash"], ["--setUniqueIP=maybe"],
])
def test_bad_flags(argv):
    with pytest.raises(ConfigError):
        parse_args(argv)


def test_unknown_config_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("loxiUrl: http://x\n")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_args(["--config", str(f)])


async def test_the_agent_sends_the_token_of_its_token_file(tmp_path):
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = b'{"version": "v"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token_file = tmp_path / "token"
        token_file.write_text("# the API token\nk8s-agent-token-1\n")
        url = f"--loxiURL=http://127.0.0.1:{server.server_port}"
        for argv, expected in (([url, f"--loxiTokenFile={token_file}"],
                                "Bearer k8s-agent-token-1"), ([url], None)):
            [client] = loxi_clients(parse_args(argv))
            async with client:
                assert await client.get("/version") == {"version": "v"}
            assert seen.pop() == expected
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("key, content, needle", [
    ("--loxiTokenFile", None, "No such file"),
    ("--loxiTokenFile", "# only a comment\n", "no token in it"),
    ("--loxiCACert", None, "cannot be read"),
])
def test_unusable_token_or_ca_files_stop_the_agent(tmp_path, key, content, needle):
    path = tmp_path / "f"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        parse_args([f"{key}={path}"])


def test_main_reports_config_errors(capsys):
    assert agent_mod.main(["--setLBMode=77"]) == 2
    assert "setLBMode" in capsys.readouterr().out


def test_pool_ranges():
    p4 = parse_pools("a=20.0.0.0/30,b=123.123.123.1/24,c=1.1.1.1/32", 4)
    assert [(x & 0xFF, y & 0xFF) for x, y in p4["a"]] == [(1, 2)]  # no network/broadcast
    assert [(x & 0xFF, y & 0xFF) for x, y in p4["b"]] == [(1, 254)]
    assert p4["c"][0][0] == p4["c"][0][1]
    p6 = parse_pools("d=3ffe:cafe::1/96", 6)
    assert p6["d"][0][0] & 0xFFFF == 1


# ---- annotations --------------------------------------------------------------------------

CFG = AgentConfig()


def svc(annotations: dict[str, str], **spec) -> dict:
    return {"metadata": {"name": "s", "namespace": "ns", "annotations": annotations},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}], **spec}}


def parse(a: dict[str, str], **spec) -> ann.ServiceOptions:
    return ann.parse(svc(a, **spec), CFG, {"defaultPool", "pool2"}, {"defaultPool"})


def test_annotations_all_valid():
    o = parse({"loxilb.io/lbmode": "fullnat", "loxilb.io/epselect": "lc",
               "loxilb.io/liveness": "yes", "loxilb.io/probetype": "http",
               "loxilb.io/probeport": "8080", "loxilb.io/probereq": "GET /",
               "loxilb.io/proberesp": "OK", "loxilb.io/probetimeout": "5",
               "loxilb.io/proberetries": "4", "loxilb.io/timeout": "300",
               "loxilb.io/staticIP": "1.2.3.4", "loxilb.io/poolSelect": "pool2",
               "loxilb.io/usepodnetwork": "yes",
               "loxilb.io/prefLocalPod": "yes", "loxilb.io/nodelabel": "example.com/lb"})
    assert (o.mode, o.sel, o.monitor, o.probe_type, o.probe_port) == (2, 4, True, "http", 8080)
    assert (o.probe_req, o.probe_resp, o.probe_timeout, o.probe_retries) == (
        "GET /", "OK", 5, 4)
    assert (o.timeout, o.static_ip, o.pool) == (300, "1.2.3.4", "pool2")
    assert o.use_pod_network and o.pref_local_pod and o.node_label == "example.com/lb"


def test_annotation_defaults_and_global_flags():
    o = parse({})
    assert (o.mode, o.sel, o.monitor, o.timeout, o.pool, o.ipam) == (
        0, 0, False, 1800, "defaultPool", "ipv4")
    cfg = AgentConfig(lb_mode=1, monitor=True, use_pod_network=True)
    o = ann.parse(svc({}), cfg, {"defaultPool"}, set())
    assert o.mode == 1 and o.monitor and o.use_pod_network
    o = parse({"loxilb.io/usepodnetwork": "no"})
    assert not o.use_pod_network
    assert parse({"loxilb.io/lbmode": "dsr"}).sel == 1  # DSR needs hash
    assert parse({}, ipFamilies=["IPv6"]).vip_family == 6
    o = parse({"loxilb.io/ipam": "nat64"})
    assert (o.vip_family, o.endpoint_family) == (6, 4)


def test_ip_family_policy():
    assert parse({}).vip_families == (4,) and not parse({}).dual_stack
    # SingleStack (or no policy): the first of ipFamilies, or the ipam annotation
    assert parse({}, ipFamilies=["IPv6", "IPv4"]).vip_families == (6,)
    assert parse({"loxilb.io/ipam": "nat64"}, ipFamilies=["IPv4"]).vip_families == (6,)
    o = parse({}, ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv6", "IPv4"])
    assert (o.vip_families, o.dual_stack, o.vip_family) == ((6, 4), True, 6)
    # PreferDualStack on a single-stack cluster: the apiserver lists one family
    assert parse({}, ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4"]).vip_families == (4,)
    # RequireDualStack always means both
    assert parse({}, ipFamilyPolicy="RequireDualStack",
                 ipFamilies=["IPv4"]).vip_families == (4, 6)
    # nat64 on a dual-stack Service: only the v6 VIP's endpoints change
    o = parse({"loxilb.io/ipam": "nat64"}, ipFamilyPolicy="RequireDualStack",
              ipFamilies=["IPv4", "IPv6"])
    assert o.vip_families == (4, 6)
    assert (o.endpoint_family_for(4), o.endpoint_family_for(6)) == (4, 4)
    o = parse({}, ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    assert (o.endpoint_family_for(4), o.endpoint_family_for(6)) == (4, 6)
    # staticIP of either family; poolSelect needs the pool in at least one family
    o = parse({"loxilb.io/staticIP": "3ffe::9", "loxilb.io/poolSelect": "pool2"},
              ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    assert (o.static_ip, o.pool) == ("3ffe::9", "pool2")
    with pytest.raises(ann.AnnotationError, match="no such IPv4 or IPv6 pool"):
        parse({"loxilb.io/poolSelect": "nope"}, ipFamilyPolicy="PreferDualStack",
              ipFamilies=["IPv4", "IPv6"])
    with pytest.raises(ann.AnnotationError, match="not an IPv4 address"):
        parse({"loxilb.io/staticIP": "3ffe::9"})


@pytest.mark.parametrize("key,value,needle", [
    ("lbmode", "turbo", "lbmode"),
    ("epselect", "random", "epselect"),
    ("liveness", "maybe", "yes or no"),
    ("probetype", "icmp9", "probetype"),
    ("probeport", "70000", "out of range"),
    ("probeport", "x", "not an integer"),
    ("probetimeout", "0", "out of range"),
    ("proberetries", "-1", "out of range"),
    ("timeout", "abc", "not an integer"),
    ("staticIP", "1.2.3", "not an IP"),
    ("staticIP", "::1", "not an IPv4"),
    ("poolSelect", "nosuch", "no such IPv4 pool"),
    ("secondaryIPs", "1.1.1.1,nope", "'nope' is not an IP address"),
    ("secondaryIPs", "1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4", "at most 3"),
    ("usepodnetwork", "si", "yes or no"),
    ("prefLocalPod", "1", "yes or no"),
    ("nodelabel", "bad key!", "label key"),
    ("ipam", "ipv5", "ipam"),
])
def test_invalid_annotations(key, value, needle):
    with pytest.raises(ann.AnnotationError) as exc:
        parse({f"loxilb.io/{key}": value})
    assert needle in str(exc.value)


def test_several_problems_reported_together():
    with pytest.raises(ann.AnnotationError) as exc:
        parse({"loxilb.io/lbmode": "x", "loxilb.io/timeout": "y",
               "loxilb.io/probetype": "tcp"})
    assert len(exc.value.problems) == 3  # incl. "probetype=tcp needs probeport"
    with pytest.raises(ann.AnnotationError, match="dsr needs"):
        parse({"loxilb.io/lbmode": "dsr", "loxilb.io/epselect": "rr"})


# ---- IPAM ---------------------------------------------------------------------------------


def ports(*ps: int, proto: str = "tcp") -> frozenset:
    return frozenset((p, proto) for p in ps)


def test_shared_ipam():
    ipam = Ipam(parse_pools("defaultPool=20.0.0.0/30", 4), {}, shared=True)
    assert ipam.allocate("a", 4, "defaultPool", ports(80)).ip == "20.0.0.1"
    assert ipam.allocate("b", 4, "defaultPool", ports(443)).ip == "20.0.0.1"
    assert ipam.allocate("c", 4, "defaultPool", ports(80, proto="udp")).ip == "20.0.0.1"
    assert ipam.allocate("d", 4, "defaultPool", ports(80)).ip == "20.0.0.2"
    with pytest.raises(PoolExhausted):
        ipam.allocate("e", 4, "defaultPool", ports(80))
    # a ports change that now clashes moves the Service; one that fits keeps the address
    assert ipam.allocate("b", 4, "defaultPool", ports(443, 8443)).ip == "20.0.0.1"
    ipam.release("a")
    assert ipam.allocate("e", 4, "defaultPool", ports(80)).ip == "20.0.0.1"
    assert ipam.pool_of("20.0.0.2") == "defaultPool" and ipam.pool_of("9.9.9.9") is None


def test_unique_ipam_static_and_reserve():
    ipam = Ipam(parse_pools("p=20.0.0.1-20.0.0.2", 4), parse_pools("p=3ffe::/126", 6),
                shared=False)
    assert ipam.reserve("s", "20.0.0.1", ports(80)).pool == "p"
    assert ipam.allocate("a", 4, "p", ports(81)).ip == "20.0.0.2"
    with pytest.raises(PoolExhausted):
        ipam.allocate("b", 4, "p", ports(82))
    with pytest.raises(AddressInUse):
        ipam.reserve("c", "20.0.0.2", ports(99))
    assert ipam.reserve("x", "8.8.8.8", ports(80)).pool is None
    assert ipam.allocate("v6", 6, "p", ports(80)).ip == "3ffe::1"
    with pytest.raises(PoolExhausted, match="no IPv6 pool"):
        ipam.allocate("v6b", 6, "nope", ports(80))


def test_ipam_per_family():
    ipam = Ipam(parse_pools("p=20.0.0.1-20.0.0.2", 4), parse_pools("p=3ffe::/126", 6),
                shared=False)
    assert ipam.allocate("ds", 4, "p", ports(80)).ip == "20.0.0.1"
    assert ipam.allocate("ds", 6, "p", ports(80)).ip == "3ffe::1"
    assert {f: a.ip for f, a in ipam.of("ds").items()} == {4: "20.0.0.1", 6: "3ffe::1"}
    # each family is kept on re-allocation and released on its own
    assert ipam.allocate("ds", 6, "p", ports(80, 81)).ip == "3ffe::1"
    assert [a.ip for a in ipam.release("ds", 6)] == ["3ffe::1"]
    assert ipam.get("ds", 6) is None and ipam.get("ds").ip == "20.0.0.1"
    assert ipam.allocate("other", 6, "p", ports(80)).ip == "3ffe::1"  # reused
    assert ipam.reserve("ds", "3ffe::2", ports(80)).pool == "p"  # recovery of a v6 address
    assert sorted(a.ip for a in ipam.release("ds")) == ["20.0.0.1", "3ffe::2"]
    assert ipam.of("ds") == {}


# ---- endpoints ----------------------------------------------------------------------------


def node(name: str, ip: str, ready: str = "True", labels: dict | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"conditions": [{"type": "Ready", "status": ready}],
                       "addresses": [{"type": "Hostname", "address": name},
                                     {"type": "InternalIP", "address": ip}]}}


SVC = {"metadata": {"name": "s", "namespace": "ns"},
       "spec": {"ports": [{"name": "http", "port": 80, "nodePort": 30080, "targetPort": 8080},
                          {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053,
                           "targetPort": 53}]}}


def test_node_endpoints():
    nodes = [node("a", "10.0.0.1"), node("b", "10.0.0.2", ready="False"),
             node("c", "10.0.0.3", labels={backends.EXCLUDE_LABEL: ""}), node("d", "fd00::4")]
    got = backends.endpoints(SVC, ann.ServiceOptions(), nodes, [])
    assert got == {(80, "tcp"): [("10.0.0.1", 30080)], (53, "udp"): [("10.0.0.1", 30053)]}
    v6 = backends.endpoints(SVC, ann.ServiceOptions(ipam="ipv6"), nodes, [])
    assert v6[(80, "tcp")] == [("fd00::4", 30080)]
    # a dual-stack node: each family's endpoints use the node address of that family
    both = [{"metadata": {"name": "e"},
             "status": {"conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "InternalIP", "address": "10.0.0.5"},
                                      {"type": "InternalIP", "address": "fd00::5"}]}}]
    opts = ann.ServiceOptions(policy="RequireDualStack", families=(4, 6))
    assert backends.endpoints(SVC, opts, both, [], 4)[(80, "tcp")] == [("10.0.0.5", 30080)]
    assert backends.endpoints(SVC, opts, both, [], 6)[(80, "tcp")] == [("fd00::5", 30080)]


def test_pod_endpoints_match_ports_by_name():
    sl = {"addressType": "IPv4",
          "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                    {"name": "dns", "port": 5353, "protocol": "UDP"}],
          "endpoints": [{"addresses": ["10.244.0.1"], "conditions": {"ready": True}},
                        {"addresses": ["10.244.0.2"], "conditions": {}},
                        {"addresses": ["10.244.0.3"], "conditions": {"ready": False}}]}
    got = backends.endpoints(SVC, ann.ServiceOptions(use_pod_network=True), [], [sl])
    assert got[(80, "tcp")] == [("10.244.0.1", 8080), ("10.244.0.2", 8080)]
    assert got[(53, "udp")] == [("10.244.0.1", 5353), ("10.244.0.2", 5353)]


# ---- rule bodies --------------------------------------------------------------------------


def test_secondary_ips_go_on_the_sctp_rules_only():
    opts = parse({"loxilb.io/secondaryIPs": "21.0.0.1, 21.0.0.2"})
    assert opts.secondary_ips == ("21.0.0.1", "21.0.0.2")
    eps = {(80, "tcp"): [("10.0.0.1", 30080)], (38412, "sctp"): [("10.0.0.1", 30412)]}
    rules = {k: rule_body(e) for k, e in
             reconcile.build_rules("ns", "s", opts, ["1.1.1.1"], eps, []).items()}
    assert rules[("1.1.1.1", 38412, "sctp", 0)]["secondaryIPs"] == [
        {"secondaryIP": "21.0.0.1"}, {"secondaryIP": "21.0.0.2"}]
    assert "secondaryIPs" not in rules[("1.1.1.1", 80, "tcp", 0)]


def test_rule_bodies_and_diff():
    opts = ann.ServiceOptions(mode=NatMode.FULLNAT, sel=Selection.HASH, pref_local_pod=True,
                              probe_type="tcp", probe_port=80, monitor=True)
    eps = {(80, "tcp"): [("10.0.0.1", 30080), ("10.0.0.2", 30080)],
           (38412, "sctp"): [("10.0.0.1", 30412)], (81, "tcp"): []}
    entries = reconcile.build_rules("ns", "s", opts, ["1.1.1.1"], eps, ["10.0.0.0/8"],
                                    instance_host="10.0.0.2")
    rules = {k: rule_body(e) for k, e in entries.items()}
    assert set(rules) == {("1.1.1.1", 80, "tcp", 0), ("1.1.1.1", 38412, "sctp", 0)}
    tcp = rules[("1.1.1.1", 80, "tcp", 0)]
    assert tcp["serviceArguments"]["name"] == "ns_s"
    assert tcp["endpoints"] == [{"endpointIP": "10.0.0.2", "targetPort": 30080, "weight": 1}]
    assert "secondaryIPs" not in tcp and "secondaryIPs" not in rules[("1.1.1.1", 38412, "sctp", 0)]
    assert tcp["allowedSources"] == [{"prefix": "10.0.0.0/8"}]
    # the server's answer (other key casing, output-only fields) is not a difference
    echoed = {"serviceArguments": {k.upper() if k in ("bgp", "monitor") else k: v
                                   for k, v in tcp["serviceArguments"].items()},
              "endpoints": [dict(e, state="active", counter="1:2") for e in tcp["endpoints"]],
              "allowedSources": tcp["allowedSources"], "secondaryIPs": None}
    assert not reconcile.differs(tcp, echoed)
    echoed["serviceArguments"]["mode"] = 0
    assert reconcile.differs(tcp, echoed) and reconcile.immutable_differs(tcp, echoed)


def test_hostname_status_parsing():
    assert status.ip_from_hostname("llb-20.0.0.1") == "20.0.0.1"
    assert status.ip_from_hostname("llb-3ffe-cafe--1") == "3ffe:cafe::1"
    assert status.ip_from_hostname("example.com") is None


def test_source_ranges_per_vip_family():
    ranges = ["10.0.0.0/8", "2001:db8:c::/48", " 192.168.0.0/16 "]
    assert reconcile.sources_for("20.0.0.1", ranges) == ["10.0.0.0/8", " 192.168.0.0/16 "]
    assert reconcile.sources_for("3ffe:cafe::1", ranges) == ["2001:db8:c::/48"]
    # no range of the VIP's family: that family admits nobody (not everybody)
    assert reconcile.sources_for("3ffe:cafe::1", ["10.0.0.0/8"]) == ["::/128"]
    assert reconcile.sources_for("20.0.0.1", ["2001:db8:c::/48"]) == ["0.0.0.0/32"]
    assert reconcile.sources_for("20.0.0.1", []) == []
    # text that is no prefix is kept: building the rule reports it
    assert reconcile.sources_for("20.0.0.1", ["bogus"]) == ["bogus"]
