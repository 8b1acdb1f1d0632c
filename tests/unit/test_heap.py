"""engine.heap: a slow full collection freezes the heap, so the next ones skip it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pyloxi.engine import heap


@pytest.fixture
def thawed() -> Iterator[None]:
    heap.uninstall()
    yield
    heap.uninstall()


def test_slow_full_collection_freezes_survivors(thawed: None) -> None:
    heap.freeze_after_slow_collections(slow_s=0.0)  # every full collection counts as slow
    kept = [[i] for i in range(50_000)]
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    heap.uninstall()
    assert gc.get_freeze_count() == 0


def test_fast_full_collection_freezes_nothing(thawed: None) -> None:
    heap.freeze_after_slow_collections(slow_s=3600.0)
    gc.collect()
    assert gc.get_freeze_count() == 0


def test_frozen_objects_are_still_freed_by_refcount(thawed: None) -> None:
    import weakref

    class Obj:
        pass

    heap.freeze_after_slow_collections(slow_s=0.0)
    obj = Obj()
    ref = weakref.ref(obj)
    gc.collect()
    assert gc.get_freeze_count() > 0 and ref() is obj
    del obj  # no cycle: freed at once though frozen
    assert ref() is None
