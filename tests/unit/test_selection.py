"""Selection tables: Maglev balance and disruption, smooth WRR exactness, apportioning.

What Maglev (M = 1021, prime) guarantees and what these tests assert:
- balance, exact: each of n endpoints owns floor(M/n) or ceil(M/n) slots. For n <= 64 that is
  within [0.937, 1.063] x M/n, tighter than the 0.9..1.1 asked for.
- disruption: removing one endpoint moves all of its slots to survivors, and the survivors'
  tables are again perfectly balanced. Slots of *other* endpoints do move a little (Maglev trades
  that for balance): typically 3-4% of M, with rare tails near 19% seen by hypothesis. The test
  bounds it at 25% of M (empirical); "only the removed endpoint's slots change" is NOT a property
  of Maglev. It IS a property of pyloxi's liveness path: a probe-down endpoint's slots alone are
  re-pointed (test_hash_down_endpoint_moves_only_its_own_slots).
- determinism: the table depends on the set of identities only, not on their order or indexes.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from math import gcd

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyloxi.engine.maglev import maglev_size, maglev_table
from pyloxi.engine.program import SLOT_TABLE_SIZE
from pyloxi.engine.selection import apportion, build_slots, smooth_wrr
from pyloxi.model.lb import Selection

M = SLOT_TABLE_SIZE

identity = st.builds(
    lambda a, b, c, d, port: f"{a}.{b}.{c}.{d}:{port}",
    st.integers(1, 223),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 254),
    st.integers(0, 65535),
)
identity_sets = st.lists(identity, min_size=1, max_size=64, unique=True)


def owners(ids: list[str]) -> list[str]:
    return [ids[i] for i in maglev_table(ids)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_sets)
def test_maglev_balance_is_floor_or_ceil(ids: list[str]):
    table = maglev_table(ids)
    assert len(table) == M
    counts = Counter(table)
    n = len(ids)
    assert set(counts) == set(range(n))
    for c in counts.values():
        assert M // n <= c <= -(-M // n)
        assert 0.9 * M / n <= c <= 1.1 * M / n


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_sets.filter(lambda ids: len(ids) >= 2), st.data())
def test_maglev_removal_disruption(ids: list[str], data: st.DataObject):
    gone = data.draw(st.sampled_from(ids))
    rest = [i for i in ids if i != gone]
    before, after = owners(ids), owners(rest)
    # every slot of the removed endpoint moves to a survivor
    assert all(a in rest for b, a in zip(before, after, strict=True) if b == gone)
    # collateral movement of other endpoints' slots stays small (empirical bound, see top)
    collateral = sum(1 for b, a in zip(before, after, strict=True) if b != gone and b != a)
    assert collateral <= 0.25 * M


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_sets, st.randoms(use_true_random=False))
def test_maglev_depends_only_on_the_set(ids: list[str], rnd):
    shuffled = list(ids)
    rnd.shuffle(shuffled)
    assert owners(ids) == owners(shuffled)


def test_maglev_known_values_are_stable():
    # Guards against an accidental change of hash or population order: every LB node (and the
    # same node after an upgrade) must build the same table from the same endpoints.
    ids = ["31.31.31.1:8080", "31.31.31.2:8080", "31.31.31.3:8080"]
    table = maglev_table(ids)
    assert Counter(table) == {0: 341, 1: 340, 2: 340}
    assert "".join(map(str, table[:24])) == "020222200200000202200111"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 255), min_size=1, max_size=64).filter(any))
def test_smooth_wrr_is_exact_over_a_period(weights: list[int]):
    seq = smooth_wrr(weights)
    assert len(seq) == sum(weights)
    assert Counter(seq) == {i: w for i, w in enumerate(weights) if w}


def test_smooth_wrr_spreads_picks():
    # nginx's example: weights 5,1,1 -> a a b a c a a (no run of the heavy one longer than 2)
    assert smooth_wrr([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 255), min_size=1, max_size=64).filter(any))
def test_apportion_exact_or_within_two_slots(weights: list[int]):
    counts = apportion(weights)
    g = 0
    for w in weights:
        g = gcd(g, w)
    wsum = sum(weights)
    assert [c == 0 for c in counts] == [w == 0 for w in weights]
    if wsum // g <= M:
        # the reduced weights fit: ratios are exact
        assert counts == [w // g for w in weights]
    else:
        # no exact table of <= M slots exists; we fill exactly M, each share within a slot or
        # two of its ideal (largest remainder: < 1; the >= 1 floor for tiny weights may add one)
        assert sum(counts) == M
        for c, w in zip(counts, weights, strict=True):
            assert abs(c - Fraction(w * M, wsum)) < 2


def test_priority_table():
    active = [(0, "a:1", 2), (2, "c:1", 1), (3, "d:1", 0)]
    assert build_slots(Selection.PRIORITY, active) == (0, 2, 0)
    zero = [(0, "a:1", 0), (1, "b:1", 0)]
    assert build_slots(Selection.PRIORITY, zero) == (0, 1)
    big = [(i, f"e{i}:1", 255 - i) for i in range(64)]
    table = build_slots(Selection.PRIORITY, big)
    assert len(table) == M and set(table) == set(range(64))


def test_rr_lc_hash_tables():
    active = [(3, "a:1", 1), (1, "b:1", 9)]
    assert build_slots(Selection.RR, active) == (1, 3)
    assert build_slots(Selection.LC, active) == (1, 3)
    h = build_slots(Selection.HASH, active)
    assert len(h) == maglev_size([1, 9]) and set(h) == {1, 3}
    assert build_slots(Selection.PERSIST, active) == h
    assert build_slots(Selection.HASH, []) == ()


@given(st.integers(min_value=2, max_value=64), st.data())
@settings(max_examples=40, deadline=None)
def test_hash_down_endpoint_moves_only_its_own_slots(n: int, data: st.DataObject) -> None:
    """Liveness: when one endpoint goes down, no slot of a healthy endpoint changes."""
    eps = [(i, f"10.1.{i // 250}.{i % 250}:80", 1) for i in range(n)]
    dead = data.draw(st.integers(min_value=0, max_value=n - 1))
    before = build_slots(Selection.HASH, eps)
    after = build_slots(Selection.HASH, [e for e in eps if e[0] != dead], [eps[dead]])
    assert dead not in after
    for b, a in zip(before, after, strict=True):
        if b != dead:
            assert a == b


# --- weighted Maglev (as Katran's MaglevHashV2 and Cilium weight their tables) ---

weighted_sets = st.lists(st.tuples(identity, st.integers(1, 100)), min_size=1, max_size=64,
                         unique_by=lambda t: t[0])


def test_maglev_weights_one_to_nine() -> None:
    ids = ["10.0.11.2:80", "10.0.12.2:80"]
    counts = Counter(maglev_table(ids, weights=[1, 9]))
    assert abs(counts[0] - M / 10) <= 2 and abs(counts[1] - 9 * M / 10) <= 2
    # and through the selection table the daemon installs (hash and persist alike)
    table = build_slots(Selection.HASH, [(0, ids[0], 1), (1, ids[1], 9)])
    assert len(table) == maglev_size([1, 9]) >= 1000  # the 1-weight endpoint: >= 100 slots
    assert abs(Counter(table)[1] / len(table) - 0.9) < 0.001


def test_maglev_equal_weights_are_the_unweighted_table() -> None:
    ids = ["31.31.31.1:8080", "31.31.31.2:8080", "31.31.31.3:8080"]
    assert maglev_table(ids, weights=[7, 7, 7]) == maglev_table(ids)
    assert maglev_table(ids, weights=[0, 0, 0]) == maglev_table(ids)  # all 0: all equal


def test_maglev_weight_zero_gets_nothing() -> None:
    ids = ["a:1", "b:1", "c:1"]
    assert set(maglev_table(ids, weights=[3, 0, 1])) == {0, 2}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weighted_sets)
def test_maglev_shares_follow_weights(pairs: list[tuple[str, int]]) -> None:
    ids, weights = [p[0] for p in pairs], [p[1] for p in pairs]
    counts = Counter(maglev_table(ids, weights=weights))
    total = sum(weights)
    for i, w in enumerate(weights):
        # each endpoint places one entry per max/w rounds: its share is off by at most the
        # entries of one round (n), whatever the weights
        assert abs(counts[i] - M * w / total) <= len(ids) + 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weighted_sets.filter(lambda p: len(p) >= 2), st.data())
def test_maglev_weighted_removal_disruption(pairs: list[tuple[str, int]],
                                            data: st.DataObject) -> None:
    ids, weights = [p[0] for p in pairs], [p[1] for p in pairs]
    gone = data.draw(st.sampled_from(ids))
    keep = [i for i, x in enumerate(ids) if x != gone]
    before = [ids[i] for i in maglev_table(ids, weights=weights)]
    after = [ids[keep[i]] for i in maglev_table([ids[i] for i in keep],
                                                weights=[weights[i] for i in keep])]
    assert all(a != gone for a in after)
    collateral = sum(1 for b, a in zip(before, after, strict=True) if b != gone and b != a)
    assert collateral <= 0.25 * M


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weighted_sets.filter(lambda p: len(p) >= 2), st.data())
def test_maglev_reweight_moves_little(pairs: list[tuple[str, int]], data: st.DataObject) -> None:
    """Changing one endpoint's weight moves about the slots its share changes by."""
    ids, weights = [p[0] for p in pairs], [p[1] for p in pairs]
    i = data.draw(st.integers(0, len(ids) - 1))
    new = list(weights)
    new[i] = data.draw(st.integers(1, 100))
    before, after = maglev_table(ids, weights=weights), maglev_table(ids, weights=new)
    moved = sum(1 for b, a in zip(before, after, strict=True) if b != a)
    ideal = abs(M * weights[i] / sum(weights) - M * new[i] / sum(new))
    assert moved <= 2 * ideal + 0.3 * M
