"""CLI argument parsing: port specs, endpoints, bodies and delete paths, globals, settings."""

from __future__ import annotations

import pytest

from pyloxi.cli.client import ENV_API, Settings, default_token_file, make_settings
from pyloxi.cli.lb import build_rules, delete_calls
from pyloxi.cli.main import hoist_global_options
from pyloxi.cli.parse import (
    InputError,
    PortSpec,
    parse_cidrs,
    parse_delete_ports,
    parse_endpoint,
    parse_port_specs,
)
from pyloxi.model.lb import LoadBalancerEntry

# ------------------------------------------------------------------- port specs


@pytest.mark.parametrize(
    ("values", "want"),
    [
        (["80:8080"], [PortSpec(80, 0, 8080)]),
        (["80:8080,443:8443"], [PortSpec(80, 0, 8080), PortSpec(443, 0, 8443)]),
        (["80:8080", "443:8443"], [PortSpec(80, 0, 8080), PortSpec(443, 0, 8443)]),
        (["8080-8081:32015"], [PortSpec(8080, 8081, 32015)]),
        (["8080-8080:80"], [PortSpec(8080, 0, 80)]),
        (["53"], [PortSpec(53, 0, 53)]),
        (["80:0"], [PortSpec(80, 0, 0)]),
        ([" 80 : 8080 , "], [PortSpec(80, 0, 8080)]),
        (None, []),
    ],
)
def test_port_specs(values: list[str] | None, want: list[PortSpec]) -> None:
    assert parse_port_specs(values, "--tcp") == want


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("x:80", "--tcp port 'x'"),
        ("80:x", "--tcp target port 'x'"),
        ("0:80", "--tcp port 0"),
        ("70000:80", "--tcp port 70000"),
        ("80:70000", "target port 70000"),
        ("90-80:80", "end below start"),
        ("80-:80", "--tcp port ''"),
        ("-80:80", "--tcp port ''"),
    ],
)
def test_bad_port_specs(value: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        parse_port_specs([value], "--tcp")
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_delete_ports() -> None:
    assert parse_delete_ports(["80,8080-8090", "443:8443"], "--tcp") == [
        (80, 0),
        (8080, 8090),
        (443, 0),
    ]
    with pytest.raises(InputError):
        parse_delete_ports(["http"], "--tcp")


# ------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.1:5", ("10.0.0.1", 5)),
        ("10.0.0.1", ("10.0.0.1", 1)),
        ("10.0.0.1:0", ("10.0.0.1", 0)),
        ("10.0.0.1:255", ("10.0.0.1", 255)),
        ("fd00::1", ("fd00::1", 1)),
        ("[fd00::1]:7", ("fd00::1", 7)),
        ("[fd00::1]", ("fd00::1", 1)),
        ("fd00::1:7", ("fd00::1", 7)),
    ],
)
def test_endpoint(text: str, want: tuple[str, int]) -> None:
    assert parse_endpoint(text) == want


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10.0.0:1", "'10.0.0' is not an IP address"),
        ("host:1", "'host' is not an IP address"),
        ("10.0.0.1:x", "weight"),
        ("10.0.0.1:256", "weight"),
        ("10.0.0.1:-1", "weight"),
        ("[fd00::1", "']'"),
        ("[fd00::1]x", "[IP]:WEIGHT"),
        ("nonsense", "expected IP:WEIGHT"),
    ],
)
def test_bad_endpoint(text: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        parse_endpoint(text)
    assert words in str(err.value)


def test_cidrs() -> None:
    assert parse_cidrs(["10.0.0.0/24,10.1.2.3/16"]) == ["10.0.0.0/24", "10.1.0.0/16"]
    with pytest.raises(InputError, match="CIDR"):
        parse_cidrs(["10.0.0.0/33"])


# ------------------------------------------------------------------- create bodies


def test_build_one_rule_per_pair_and_protocol() -> None:
    entries = build_rules(
        "20.20.20.1",
        tcp=["80:8080,443:8443"],
        udp=["53"],
        endpoints=["31.31.31.1:2,32.32.32.1"],
    )
    keys = [(e.service_arguments.protocol, e.service_arguments.port) for e in entries]
    assert keys == [("tcp", 80), ("tcp", 443), ("udp", 53)]
    bodies = [e.request_body() for e in entries]
    first = bodies[0]
    assert first["endpoints"] == [  # no output-only fields in a request
        {"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 2},
        {"endpointIP": "32.32.32.1", "targetPort": 8080, "weight": 1},
    ]
    assert bodies[1]["endpoints"][0]["targetPort"] == 8443
    for e, b in zip(entries, bodies, strict=True):  # every body is the entry's wire form
        assert LoadBalancerEntry.model_validate(b) == e
        assert "secondaryIPs" not in b and "allowedSources" not in b


def test_build_options_map_to_wire_fields() -> None:
    [entry] = build_rules(
        "20.20.20.1",
        tcp=["8080-8081:32015"],
        endpoints=["10.0.0.1:1"],
        select="HASH",
        mode="dsr",
        inatimeout=30,
        name="svc:inst",
        sources=["10.10.10.0/24"],
        mark=9,
        bgp=True,
        probetype="TCP",
        probeport=8080,
        probetimeout=5,
        proberetries=3,
    )
    s = entry.request_body()["serviceArguments"]
    assert (s["port"], s["portMax"]) == (8080, 8081)
    assert (s["sel"], s["mode"]) == (1, 3)
    assert (s["inactiveTimeOut"], s["name"], s["block"], s["bgp"]) == (30, "svc:inst", 9, True)
    assert (s["probetype"], s["probeport"], s["probeTimeout"], s["probeRetries"]) == (
        "tcp",
        8080,
        5,
        3,
    )
    assert s["monitor"] is True  # a probe type implies monitor, as loxilb
    assert entry.request_body()["allowedSources"] == [{"prefix": "10.10.10.0/24"}]


def test_build_icmp_and_attach() -> None:
    [entry] = build_rules("1.1.1.1", icmp=True, endpoints=["2.2.2.2"], attach=True)
    s = entry.request_body()["serviceArguments"]
    assert (s["protocol"], s["port"], s["oper"]) == ("icmp", 0, 1)
    assert entry.endpoints[0].target_port == 0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"vip": "1.1.1"}, "invalid VIP"),
        ({"tcp": None}, "no service port"),
        ({"endpoints": None}, "no endpoints"),
        ({"endpoints": ["1.1.1.1:heavy"]}, "weight"),
        ({"select": "random"}, "--select 'random'"),
        ({"mode": "nat"}, "--mode 'nat'"),
        ({"probetype": "dns"}, "--probetype 'dns': expected one of tcp|udp|sctp|ping"),
        ({"probeport": 70000}, "--probeport"),
        ({"proberetries": 101}, "--proberetries 101: must be 0-100"),
        ({"inatimeout": 86401}, "--inatimeout"),
        ({"sources": ["x"]}, "source prefix"),
        ({"mark": -1}, "--mark"),
        ({"attach": True, "detach": True}, "exclude"),
        ({"secips": ["a.b"]}, "secondary IP"),
    ],
)
def test_build_rejects(kwargs: dict, words: str) -> None:
    args = {"vip": "1.1.1.1", "tcp": ["80:80"], "endpoints": ["2.2.2.2"]} | kwargs
    with pytest.raises(InputError) as err:
        build_rules(args.pop("vip"), **args)
    assert words in str(err.value)


# ------------------------------------------------------------------- delete paths

LB = "/config/loadbalancer"


def test_delete_calls_by_key() -> None:
    calls = delete_calls("20.20.20.1", tcp=["80,8080-8090"], udp=["53"], mark=4, bgp=True)
    assert [(c[1], c[3]) for c in calls] == [
        (f"{LB}/externalipaddress/20.20.20.1/port/80/protocol/tcp", {"block": 4, "bgp": "true"}),
        (
            f"{LB}/externalipaddress/20.20.20.1/port/8080/portmax/8090/protocol/tcp",
            {"block": 4, "bgp": "true"},
        ),
        (f"{LB}/externalipaddress/20.20.20.1/port/53/protocol/udp", {"block": 4, "bgp": "true"}),
    ]


def test_delete_calls_portmax_host_icmp() -> None:
    [c] = delete_calls("1.1.1.1", tcp=["3000"], portmax=3005, host="a.io")
    assert (
        c[1] == f"{LB}/hosturl/a.io/externalipaddress/1.1.1.1/port/3000/portmax/3005/protocol/tcp"
    )
    [c] = delete_calls("1.1.1.1", icmp=True)
    assert c[1] == f"{LB}/externalipaddress/1.1.1.1/port/0/protocol/icmp"


def test_delete_calls_name_and_all() -> None:
    assert delete_calls(None, name="web svc")[0][1] == f"{LB}/name/web%20svc"
    assert delete_calls(None, all_rules=True)[0][1] == f"{LB}/all"


@pytest.mark.parametrize(
    ("vip", "kwargs", "words"),
    [
        (None, {}, "exactly one"),
        ("1.1.1.1", {"name": "x"}, "exactly one"),
        (None, {"name": "x", "all_rules": True}, "exactly one"),
        ("1.1.1.1", {}, "no service port"),
        ("1.1.1", {"tcp": ["80"]}, "invalid VIP"),
        ("1.1.1.1", {"tcp": ["80"], "portmax": 70}, "--portmax 70"),
        ("1.1.1.1", {"tcp": ["x"]}, "--tcp port"),
    ],
)
def test_delete_calls_reject(vip: str | None, kwargs: dict, words: str) -> None:
    with pytest.raises(InputError) as err:
        delete_calls(vip, **kwargs)
    assert words in str(err.value)


# ------------------------------------------------------------------- globals


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["get", "lb", "-o", "wide"], ["-o", "wide", "get", "lb"]),
        (["get", "lb", "-ojson"], ["-ojson", "get", "lb"]),
        (["get", "lb", "--output=json", "-s", "h"], ["--output=json", "-s", "h", "get", "lb"]),
        (
            ["create", "lb", "1.1.1.1", "--tcp=80:80", "-p", "9", "--endpoints", "2.2.2.2"],
            ["-p", "9", "create", "lb", "1.1.1.1", "--tcp=80:80", "--endpoints", "2.2.2.2"],
        ),
        (["get", "lb", "--", "-o", "x"], ["get", "lb", "--", "-o", "x"]),
        (["delete", "lb", "--portmax=9"], ["delete", "lb", "--portmax=9"]),
    ],
)
def test_hoist_global_options(args: list[str], want: list[str]) -> None:
    assert hoist_global_options(args) == want


def test_settings_precedence() -> None:
    assert make_settings(None, None, None, None, env={}) == Settings(
        token_path=default_token_file({}))  # where `pyloxi set login` keeps its token
    s = make_settings(None, None, "JSON", None, env={ENV_API: "10.0.0.5:2222"})
    assert (s.server, s.port, s.json, s.base_url) == (
        "10.0.0.5",
        2222,
        True,
        "http://10.0.0.5:2222",
    )
    s = make_settings("1.2.3.4", 80, None, 3, env={ENV_API: "https://lb.example:8091"})
    assert s.base_url == "https://1.2.3.4:80" and s.timeout == 3
    s = make_settings(None, None, None, None, env={ENV_API: "lb.example"})
    assert s.base_url == "http://lb.example:11111"
    assert make_settings("::1", None, "wide", None, env={}).base_url == "http://[::1]:11111"


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        ((None, None, "yaml", None), {}, "--output"),
        ((None, 0, None, None), {}, "--port"),
        ((None, None, None, 0), {}, "--timeout"),
        ((None, None, None, None), {ENV_API: "ftp://x"}, ENV_API),
        ((None, None, None, None), {ENV_API: "x:port"}, ENV_API),
    ],
)
def test_settings_reject(args: tuple, env: dict[str, str], words: str) -> None:
    with pytest.raises(InputError, match=words):
        make_settings(*args, env=env)
