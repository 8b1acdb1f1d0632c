"""Maglev tables sized to their endpoints (issue 14): the busiest endpoint gets at most 1% more
slots than its weight share, at 1, 3, 64 and 1,024 endpoints, equal and unequal weights."""

from __future__ import annotations

from collections import Counter

import pytest

from pyloxi.engine.maglev import is_prime, maglev_size, maglev_table
from pyloxi.engine.program import MAX_ENDPOINTS, MAX_SLOTS
from pyloxi.engine.selection import build_slots
from pyloxi.model.lb import Selection


def ident(i: int) -> str:
    return f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:8080"


WEIGHTS = {
    "1 equal": [1],
    "3 equal": [1] * 3,
    "3 unequal": [1, 2, 7],
    "64 equal": [1] * 64,
    "64 unequal": [1 + i % 5 for i in range(64)],
    "1024 equal": [1] * MAX_ENDPOINTS,
    "1024 unequal": [1 + i % 3 for i in range(MAX_ENDPOINTS)],
}


@pytest.mark.parametrize("weights", list(WEIGHTS.values()), ids=list(WEIGHTS))
def test_busiest_endpoint_within_one_percent_of_its_share(weights: list[int]) -> None:
    size = maglev_size(weights)
    assert is_prime(size) and size <= MAX_SLOTS
    table = maglev_table([ident(i) for i in range(len(weights))], size=size, weights=weights)
    counts = Counter(table)
    total = sum(weights)
    ratio = [counts[i] / (size * w / total) for i, w in enumerate(weights)]
    assert max(ratio) <= 1.01
    assert min(ratio) >= 0.99  # and none starved either
    # what the engine installs (hash and persist): the same table, by endpoint index
    active = [(i, ident(i), w) for i, w in enumerate(weights)]
    assert build_slots(Selection.HASH, active) == tuple(table)


def test_sizes() -> None:
    # 100 slots of share for the lightest endpoint, on a ladder of 100 x 2^k
    assert [maglev_size([1] * n) for n in (1, 2, 3, 64, 1024)] == [101, 211, 401, 6421, 102407]
    # adding endpoints mostly keeps the size (and with it Maglev's small disruption)
    assert len({maglev_size([1] * n) for n in range(513, 1025)}) == 1
    # weights count by their ratio: 1:9 is ten shares of the light endpoint's
    assert maglev_size([1, 9]) == maglev_size([10, 90]) == maglev_size([1] * 10)
    # all zero weights count as equal; more than the cap is capped
    assert maglev_size([0, 0, 0]) == maglev_size([1, 1, 1])
    assert maglev_size([1, 255] * 512) == MAX_SLOTS
