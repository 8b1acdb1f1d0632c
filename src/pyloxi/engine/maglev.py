"""Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).

Every endpoint gets a permutation of the table positions derived from two independent hashes
of its *identity* ("ip:port"), never of its index: the table is then a pure function of the set
of identities, so two load balancers (or one after a restart) with the same endpoints build the
same table, and removing one endpoint leaves the others' preferences untouched.

Guarantees (table size M prime, n endpoints):
- balance: with equal weights the population loop hands out one slot per endpoint per round,
  so every endpoint owns floor(M/n) or ceil(M/n) slots (|owned - M/n| < 1).
- weights (as Katran's MaglevHashV2): in each round an endpoint earns weight/max_weight of a
  turn and places an entry whenever it has a whole turn saved up, so it owns about
  M * weight / sum(weights) slots (1:9 gives ~10%/90%). Equal weights give exactly the
  unweighted table (every endpoint earns a whole turn every round), so tables built before
  weights counted do not move.
- disruption: every slot of a removed endpoint moves; other slots *mostly* stay. Maglev does not
  promise zero collateral movement (the paper trades it for balance); tests measure the bound.
- size: `maglev_size` picks the smallest prime M that keeps every endpoint within
  MAGLEV_FAIRNESS (1%) of its weight share: an endpoint's count is its share give or take a
  slot, so its share must be >= 1/fairness slots, i.e. M >= W / (w_min * fairness)
  (W the sum, w_min the smallest positive weight, after dividing by their gcd), rounded up to
  a ladder of sizes (100 x 2^k) so that most endpoint changes keep the size; 1,024 equal
  endpoints get 102,407 slots, 1 to 100 equal ones 101 to 12,809. Capped at MAX_SLOTS (very
  uneven weights: the lightest endpoints' error is then about W / (w_min * MAX_SLOTS)).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from math import gcd

from pyloxi.engine.program import MAX_SLOTS, SLOT_TABLE_SIZE
from pyloxi.model.limits import MAGLEV_FAIRNESS


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def next_prime(n: int) -> int:
    """The smallest prime >= n."""
    while not is_prime(n):
        n += 1
    return n


def maglev_size(weights: Sequence[int], fairness: float = MAGLEV_FAIRNESS) -> int:
    """Table length for endpoints of these weights (all 0: equal): the smallest prime giving
    the lightest endpoint a share of at least 1/fairness slots (its count is within a slot of
    its share, see the module doc; tests/unit/test_maglev_size.py checks the bound), at most
    MAX_SLOTS."""
    positive = [w for w in weights if w > 0] or [1] * len(weights)
    if not positive:
        return 0
    g = 0
    for w in positive:
        g = gcd(g, w)
    total, low = sum(positive) // g, min(positive) // g
    per = round(1 / fairness)
    want = -(-total * per // low)
    # Sizes on a ladder (per x 2^k, then the next prime): adding or removing an endpoint
    # mostly keeps the size, and with it Maglev's small disruption (a new size reshuffles the
    # whole table); the price is at most twice the slots strictly needed.
    step = per
    while step < want:
        step *= 2
    if step >= MAX_SLOTS:
        return MAX_SLOTS
    return next_prime(step)


def _hash64(identity: str, person: bytes) -> int:
    # blake2b is stable across processes and machines (Python's hash() is salted per process).
    digest = hashlib.blake2b(identity.encode(), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "little")


def preferences(identity: str, size: int = SLOT_TABLE_SIZE) -> tuple[int, int]:
    """(offset, skip) of an identity's permutation: position j is (offset + j*skip) % size."""
    offset = _hash64(identity, b"pyloxi-maglev-o") % size
    skip = _hash64(identity, b"pyloxi-maglev-s") % (size - 1) + 1
    return offset, skip


def maglev_table(identities: Sequence[str], size: int = SLOT_TABLE_SIZE,
                weights: Sequence[int] | None = None) -> list[int]:
    """Lookup table of `size` entries, each an index into `identities`.

    `size` must be prime (then every skip in 1..size-1 yields a full permutation). Identities
    must be distinct. Population order is by identity, not by position in `identities`, so the
    table content (as identities) does not depend on how the caller ordered them. `weights`
    (same order as `identities`, >= 0) share the table out in proportion; weight 0 gets no slot
    unless every weight is 0, which counts as all equal.
    """
    if not identities:
        return []
    if len(set(identities)) != len(identities):
        raise ValueError("maglev identities must be distinct")
    if weights is None or not any(weights):
        weights = [1] * len(identities)
    if len(weights) != len(identities) or min(weights) < 0:
        raise ValueError("maglev weights must be one non-negative number per identity")
    order = [i for i in sorted(range(len(identities)), key=lambda i: identities[i]) if weights[i]]
    prefs = [preferences(identities[i], size) for i in order]
    w = [weights[i] for i in order]
    top = max(w)
    # Credit in units of 1/top turn, kept in integers so the table is exact and reproducible.
    credit = [0] * len(order)
    nxt = [0] * len(order)
    table = [-1] * size
    filled = 0
    while True:
        for k, who in enumerate(order):
            credit[k] += w[k]
            if credit[k] < top:
                continue
            credit[k] -= top
            offset, skip = prefs[k]
            j = nxt[k]
            pos = (offset + j * skip) % size
            while table[pos] >= 0:
                j += 1
                pos = (offset + j * skip) % size
            table[pos] = who
            nxt[k] = j + 1
            filled += 1
            if filled == size:
                return table
