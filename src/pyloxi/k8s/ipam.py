"""VIP pools: named CIDRs/ranges per address family, shared or unique allocation.

Shared mode (kube-loxilb's default): Services share an address as long as none of their
(port, protocol) pairs clash on it; the lowest address that fits is taken, so most Services end
up on the pool's first address. Unique mode (`--setUniqueIP`): one address per Service.

An owner (a Service key) holds at most one address per family: a dual-stack Service holds a v4
and a v6 address, allocated, reused and released per (owner, family).

The allocator is in memory; the agent rebuilds it after a restart from Service status
(`reserve`), which is the durable store, as kube-loxilb does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Port = tuple[int, str]  # (port, protocol)


class PoolExhausted(Exception):
    pass


class AddressInUse(Exception):
    pass


@dataclass(frozen=True)
class Allocation:
    ip: str
    pool: str | None  # None: a static address outside every pool
    ports: frozenset[Port]


class Ipam:
    def __init__(self, pools4: dict[str, list[tuple[int, int]]],
                 pools6: dict[str, list[tuple[int, int]]], *, shared: bool = True) -> None:
        self.shared = shared
        self.pools: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for name, ranges in pools4.items():
            self.pools[(4, name)] = ranges
        for name, ranges in pools6.items():
            self.pools[(6, name)] = ranges
        self._by_owner: dict[tuple[str, int], Allocation] = {}  # (owner, family) → allocation
        self._usage: dict[str, dict[Port, str]] = {}  # ip → port → owner
        self._owners: dict[str, set[str]] = {}  # ip → owners

    def pool_names(self, family: int) -> set[str]:
        return {name for fam, name in self.pools if fam == family}

    def pool_of(self, ip: str) -> str | None:
        addr = ipaddress.ip_address(ip)
        n = int(addr)
        for (fam, name), ranges in self.pools.items():
            if fam == addr.version and any(a <= n <= b for a, b in ranges):
                return name
        return None

    def get(self, owner: str, family: int | None = None) -> Allocation | None:
        """The owner's address of `family`; without a family, its v4 one, else its v6 one."""
        if family is not None:
            return self._by_owner.get((owner, family))
        return self._by_owner.get((owner, 4)) or self._by_owner.get((owner, 6))

    def of(self, owner: str) -> dict[int, Allocation]:
        """family → the owner's address of that family."""
        return {fam: a for (o, fam), a in self._by_owner.items() if o == owner}

    def owners(self) -> dict[tuple[str, int], Allocation]:
        return dict(self._by_owner)

    def _fits(self, ip: str, owner: str, ports: frozenset[Port]) -> bool:
        others = self._owners.get(ip, set()) - {owner}
        if not others:
            return True
        if not self.shared:
            return False
        usage = self._usage.get(ip, {})
        return not any(usage.get(p, owner) != owner for p in ports)

    def _take(self, owner: str, ip: str, pool: str | None, ports: frozenset[Port]) -> Allocation:
        family = ipaddress.ip_address(ip).version
        self.release(owner, family)
        alloc = Allocation(ip, pool, ports)
        self._by_owner[(owner, family)] = alloc
        self._owners.setdefault(ip, set()).add(owner)
        usage = self._usage.setdefault(ip, {})
        for p in ports:
            usage[p] = owner
        return alloc

    def reserve(self, owner: str, ip: str, ports: frozenset[Port]) -> Allocation:
        """Take a given address (staticIP, or one recovered from status)."""
        ip = str(ipaddress.ip_address(ip))
        if not self._fits(ip, owner, ports):
            users = ", ".join(sorted(self._owners.get(ip, set()) - {owner}))
            raise AddressInUse(f"{ip} is already used by {users}")
        return self._take(owner, ip, self.pool_of(ip), ports)

    def allocate(self, owner: str, family: int, pool: str,
                 ports: frozenset[Port]) -> Allocation:
        ranges = self.pools.get((family, pool))
        if ranges is None:
            raise PoolExhausted(f"no IPv{family} pool {pool!r}")
        current = self._by_owner.get((owner, family))
        # keep the current address if the (possibly changed) ports still fit on it
        if current and current.pool == pool and self._fits(current.ip, owner, ports):
            return self._take(owner, current.ip, pool, ports)
        for first, last in ranges:
            n = first
            while n <= last:
                ip = str(ipaddress.ip_address(n))
                if self._fits(ip, owner, ports):
                    return self._take(owner, ip, pool, ports)
                n += 1
                if n - first > 1_000_000:  # a pathological scan: give up rather than hang
                    break
        raise PoolExhausted(f"IPv{family} pool {pool!r} has no free address for "
                            f"{', '.join(f'{p}/{proto}' for p, proto in sorted(ports))}")

    def release(self, owner: str, family: int | None = None) -> list[Allocation]:
        """Free the owner's address of `family` (None: of every family); what was freed."""
        families = (4, 6) if family is None else (family,)
        freed = [a for f in families if (a := self._release_one(owner, f)) is not None]
        return freed

    def _release_one(self, owner: str, family: int) -> Allocation | None:
        alloc = self._by_owner.pop((owner, family), None)
        if alloc is None:
            return None
        owners = self._owners.get(alloc.ip, set())
        owners.discard(owner)
        if not owners:
            self._owners.pop(alloc.ip, None)
        usage = self._usage.get(alloc.ip, {})
        for p in [p for p, o in usage.items() if o == owner]:
            del usage[p]
        if not usage:
            self._usage.pop(alloc.ip, None)
        return alloc
