"""The wire models' typed fields: what one value may be, and its canonical wire form."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from pydantic import ValidationError

from pyloxi.api.errors import validation_reason
from pyloxi.model.conntrack import ConntrackEntry
from pyloxi.model.endpoint import EndPointHostState
from pyloxi.model.enums import PROBE_TYPES, NatMode, Oper, ProbeType, Protocol, Selection
from pyloxi.model.lb import Endpoint, LoadBalancerEntry, ServiceArguments


def svc(**kw: Any) -> ServiceArguments:
    return ServiceArguments.model_validate({"externalIP": "20.20.20.1", "port": 80} | kw)


def reason(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return validation_reason(exc.value.errors())


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("20.20.20.1", "20.20.20.1"),
        (" 20.20.20.1 ", "20.20.20.1"),  # accepted before (stripped), still
        ("2001:DB8::0:1", "2001:db8::1"),  # syntax is the model's; "IPv6 not yet" the engine's
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_addresses_are_checked_and_canonical(given: str, kept: str) -> None:
    assert svc(externalIP=given).external_ip == kept


@pytest.mark.parametrize("bad", ["20.20.20", "01.2.3.4", "1.2.3.4/32", "host", ""])
def test_malformed_address_names_the_value(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        svc(externalIP=bad)
    assert reason(err) == f"invalid externalIP: {bad!r} is not an IP address"


def test_private_ip_may_be_empty_and_prefixes_are_canonical() -> None:
    assert svc(privateIP="").private_ip == ""
    entry = LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.20.20.1", "port": 80},
        "allowedSources": [{"prefix": "10.1.2.3/16"}, {"prefix": " 10.9.9.9 "}],
    })  # fmt: skip
    assert [s.prefix for s in entry.allowed_sources or []] == ["10.1.0.0/16", "10.9.9.9/32"]


def test_enums_decode_numbers_and_words() -> None:
    a = svc(sel=3, mode=2, oper=1, protocol=" UDP ", probetype="Ping")
    assert (a.sel, a.mode, a.oper) == (Selection.PERSIST, NatMode.FULLNAT, Oper.ATTACH)
    assert (a.protocol, a.probe_type) == (Protocol.UDP, ProbeType.PING)
    wire = a.wire()  # the wire keeps loxilb's numbers and lower-case words
    assert (wire["sel"], wire["mode"], wire["oper"]) == (3, 2, 1)
    assert (wire["protocol"], wire["probetype"]) == ("udp", "ping")
    assert svc(probetype="  ").probe_type == ""  # the rule-level default, explicitly allowed


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("sel", True, "sel: Input should be a valid integer, got boolean"),
        ("sel", "1", "got string"),
        ("sel", 1.0, "got number"),
        ("mode", 6, "6 is not a valid mode (0 default, 1 onearm, 2 fullnat, 3 dsr"),
        ("protocol", 6, "protocol: Input should be a valid string, got integer"),
        ("protocol", "x" * 33, "at most 32 characters"),
        ("protocol", "tcp\x00", "control character"),
        ("probetype", "icmp", "unknown probe type 'icmp': expected one of tcp, udp, sctp, ping"),
        ("port", 65536, "port: Input should be less than or equal to 65535, got 65536"),
        ("block", -1, "block: Input should be greater than or equal to 0, got -1"),
        ("inactiveTimeOut", 86401, "less than or equal to 86400"),
        ("probeRetries", 101, "less than or equal to 100"),
    ],
)
def test_field_reasons(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        svc(**{field: value})
    assert words in reason(err), reason(err)


def test_code_builds_models_by_field_name_with_enums() -> None:
    a = ServiceArguments(external_ip="20.20.20.1", port=80, sel=Selection.HASH,
                         protocol=Protocol.SCTP, probe_type=ProbeType.TCP, oper=Oper.DETACH)
    assert a == svc(sel=1, protocol="sctp", probetype="tcp", oper=2)
    with pytest.raises(ValidationError):
        Endpoint(endpoint_ip="31.31.31.1", weight=256)


def test_wire_round_trip_is_identical_and_warning_free() -> None:
    data = {
        "serviceArguments": {"externalIP": "20.20.20.1", "port": 80, "protocol": "sctp",
                             "sel": 4, "mode": 1, "probetype": "https", "oper": 2},
        "endpoints": [{"endpointIP": "31.31.31.1", "targetPort": 8080, "weight": 9}],
    }  # fmt: skip
    entry = LoadBalancerEntry.model_validate(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pydantic serializer warnings (enum | "" union)
        text = json.dumps(entry.wire())
        assert LoadBalancerEntry.model_validate_json(text) == entry
        assert json.loads(text)["serviceArguments"]["probetype"] == "https"
        assert svc().wire()["probetype"] == ""


def test_json_schema_lists_the_enum_values() -> None:
    schema = LoadBalancerEntry.model_json_schema(by_alias=True)
    props = schema["$defs"]["ServiceArguments"]["properties"]
    assert props["sel"]["$ref"] == "#/$defs/Selection"
    assert schema["$defs"]["Selection"]["enum"] == [0, 1, 2, 3, 4, 5, 6]
    assert schema["$defs"]["ProbeType"]["enum"] == list(PROBE_TYPES)
    assert props["port"]["maximum"] == 65535
    assert "externalIP" in props and "portMax" in props


def test_host_state_and_conntrack_ports() -> None:
    with pytest.raises(ValidationError):
        EndPointHostState.model_validate({"state": "red"})  # hostName is required
    with pytest.raises(ValidationError):
        EndPointHostState.model_validate({"hostName": "10.0.0.1", "epPort": 70000})
    with pytest.raises(ValidationError):
        ConntrackEntry(destination_ip="1.1.1.1", source_ip="2.2.2.2", destination_port=-1,
                       source_port=1, protocol="tcp", conntrack_state="est", conntrack_act="x")
