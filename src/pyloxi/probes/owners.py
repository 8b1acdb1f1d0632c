"""Who wants a target probed, and whose probe parameters win.

A target may be wanted by several LB rules ("rule:<id>") and by the endpoint API ("api"). The
API's spec wins over a rule's (loxilb: POST an endpoint named like the rule-made key to change its
probe), but keeps the rule's endpoint identity so that its verdict still reaches the rule. Rule
specs of one key are alike (same endpoint, same rule conventions): the first by owner name is
taken.
"""

from __future__ import annotations

import dataclasses

from pyloxi.probes.types import ProbeTarget

API_OWNER = "api"


def rule_owner(rule_id: str) -> str:
    return f"rule:{rule_id}"


def effective_spec(specs: dict[str, ProbeTarget]) -> ProbeTarget:
    rule_specs = [specs[o] for o in sorted(specs) if o != API_OWNER]
    api = specs.get(API_OWNER)
    if api is None:
        return rule_specs[0]
    if rule_specs and not api.ep_proto:
        rs = rule_specs[0]
        return dataclasses.replace(api, ep_proto=rs.ep_proto, ep_port=rs.ep_port)
    return api
