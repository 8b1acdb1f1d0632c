"""Selection tables: which endpoint index each slot of a service's table points to.

The datapath only indexes `slots` (rr/priority: a rotating cursor; hash/persist: a flow hash
modulo len(slots); lc: candidates for least-connections). Only active endpoints appear; a
service with no active endpoint gets an empty table (the datapath then drops new flows).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

from pyloxi.engine.maglev import maglev_size, maglev_table
from pyloxi.engine.program import SLOT_TABLE_SIZE
from pyloxi.model.lb import Selection


def smooth_wrr(weights: Sequence[int]) -> list[int]:
    """nginx's smooth weighted round robin: one period of len == sum(weights).

    Each position i appears exactly weights[i] times and the picks are spread out (no bursts of
    one endpoint). Ties go to the lowest position, so the sequence is deterministic.
    """
    total = sum(weights)
    current = [0] * len(weights)
    out: list[int] = []
    for _ in range(total):
        best = -1
        for i, w in enumerate(weights):
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return out


def apportion(weights: Sequence[int], size: int = SLOT_TABLE_SIZE) -> list[int]:
    """Integer slot counts proportional to `weights`, summing to at most `size`.

    Exact when possible: weights are divided by their gcd, and if that sum fits it is used
    as-is (the ratios are then exact). Otherwise no table of <= size slots can be exact (an
    exact table must be a multiple of sum/gcd long), so the largest-remainder method fills exactly
    `size` slots, which keeps each share within 1/size of its ideal. A positive weight always gets
    at least one slot so a small endpoint is never starved by rounding.
    """
    positive = [w for w in weights if w > 0]
    if not positive:
        return [0] * len(weights)
    g = 0
    for w in positive:
        g = gcd(g, w)
    reduced = [w // g for w in weights]
    total = sum(reduced)
    if total <= size:
        return reduced
    quotas = [w * size / total for w in reduced]
    counts = [max(1, int(q)) if w > 0 else 0 for q, w in zip(quotas, reduced, strict=True)]
    # Hand out (or take back) the difference by largest (smallest) remainder; ties by position.
    order = sorted(
        (i for i, w in enumerate(reduced) if w > 0), key=lambda i: (counts[i] - quotas[i], i)
    )
    k = 0
    while sum(counts) < size:
        counts[order[k % len(order)]] += 1
        k += 1
    k = len(order) - 1
    while sum(counts) > size:  # only after the max(1, ...) floor pushed us over
        i = order[k % len(order)]
        if counts[i] > 1:
            counts[i] -= 1
        k -= 1
    return counts


def build_slots(sel: Selection, active: Sequence[tuple[int, str, int]],
                down: Sequence[tuple[int, str, int]] = ()) -> tuple[int, ...]:
    """Selection table for `active` endpoints given as (index, identity "ip:port", weight).

    - rr, lc: the active indexes in index order (weights play no part, as in loxilb's rr).
    - priority: smooth WRR over the apportioned weights. Weight 0 means "never chosen" unless
      every active endpoint has weight 0, in which case they share equally.
    - hash, persist: a Maglev table of exactly SLOT_TABLE_SIZE entries keyed by identity, each
      endpoint's share in proportion to its weight (0: none, unless all are 0); `down`
      endpoints (liveness) keep their share of the full table, re-pointed at survivors.
    """
    if not active:
        return ()
    indexes = [idx for idx, _, _ in active]
    if sel in (Selection.RR, Selection.LC):
        return tuple(sorted(indexes))
    if sel == Selection.PRIORITY:
        weights = [w for _, _, w in active]
        if not any(weights):
            weights = [1] * len(weights)
        counts = apportion(weights, max(SLOT_TABLE_SIZE, len(weights)))
        return tuple(indexes[i] for i in smooth_wrr(counts))
    if sel in (Selection.HASH, Selection.PERSIST):
        if not down:
            weights = [w for _, _, w in active]
            table = maglev_table([ident for _, ident, _ in active], size=maglev_size(weights),
                                 weights=weights)
            return tuple(indexes[i] for i in table)
        # A probe-down endpoint keeps its place in the full table and only its own slots are
        # handed to survivors, so no flow of a healthy endpoint moves (Maglev alone moves a
        # few percent of the others too); when it recovers, the full table comes back.
        members = [*active, *down]
        size = maglev_size([w for _, _, w in members])
        table = maglev_table([ident for _, ident, _ in active], size=size,
                             weights=[w for _, _, w in active])
        full = maglev_table([ident for _, ident, _ in members], size=size,
                            weights=[w for _, _, w in members])
        n_active = len(active)
        return tuple(indexes[table[slot]] if owner >= n_active else members[owner][0]
                     for slot, owner in enumerate(full))
    raise ValueError(f"no selection table for sel={sel!r}")
