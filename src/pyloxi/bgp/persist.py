"""BGP configuration on disk: the global config, the neighbours and the policies the REST API
accepted, so a restarted daemon gives them back to gobgpd (loxilb keeps them in gobgp's config
file).

One JSON file, replaced atomically after each accepted change; at start-up an unreadable file
or an entry that no longer validates is logged and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from pyloxi.bgp.config import BgpGlobal, BgpNeighbor, check_global, check_neighbor
from pyloxi.bgp.policy import PolicyBook
from pyloxi.model.errors import PyloxiError
from pyloxi.store import write_atomic

log = logging.getLogger(__name__)


def save(path: Path, g: BgpGlobal | None, neighbors: list[BgpNeighbor],
         policy: PolicyBook | None = None) -> None:
    data = {"global": asdict(g) if g is not None else None,
            "neighbors": [asdict(n) for n in neighbors],
            "policy": policy.to_json() if policy is not None else None}
    write_atomic(path, json.dumps(data, sort_keys=True) + "\n")


def load(path: Path) -> tuple[BgpGlobal | None, list[BgpNeighbor]]:
    try:
        data = json.loads(path.read_text())
        raw_global, raw_neighbors = data["global"], list(data["neighbors"])
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("bgp config %s unreadable, starting without it: %s", path, exc)
        return None, []
    g = None
    if raw_global is not None:
        try:
            g = check_global(BgpGlobal(**raw_global))
        except (TypeError, PyloxiError) as exc:
            log.error("bgp config %s: global config skipped: %s", path, exc)
    neighbors = []
    for raw in raw_neighbors:
        try:
            neighbors.append(check_neighbor(BgpNeighbor(**raw)))
        except (TypeError, PyloxiError) as exc:
            log.error("bgp config %s: neighbour %r skipped: %s", path, raw, exc)
    return g, neighbors


def load_policy(path: Path) -> PolicyBook:
    """The policies of the file; all or nothing: a policy set half restored could let through
    what it was meant to stop, so one that no longer validates drops them all (logged)."""
    try:
        raw = json.loads(path.read_text()).get("policy")
    except FileNotFoundError:
        return PolicyBook()
    except (OSError, ValueError, AttributeError) as exc:
        log.error("bgp config %s unreadable, starting without policies: %s", path, exc)
        return PolicyBook()
    if raw is None:
        return PolicyBook()
    try:
        return PolicyBook.from_json(raw)
    except (TypeError, ValueError, KeyError, AttributeError, PyloxiError) as exc:
        log.error("bgp config %s: policies skipped: %s", path, exc)
        return PolicyBook()
