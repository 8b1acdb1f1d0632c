"""Suite-wide: tests that need root skip with a reason when run as another user.

Everything under tests/datapath (BPF programs, pinned maps) and tests/integration (network
namespaces, TC, the real daemon) needs root, as does any test marked `root`. Skipping them at
collection keeps a non-root run (an editor, a CI lint job) green and honest: skipped, not
failed, and no fixture that creates namespaces or pins ever runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT_ONLY_DIRS = ("datapath", "integration")
REASON = ("needs root (network namespaces, BPF programs and maps, tc): "
          "run `make test` as root")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=REASON)
    for item in items:
        try:
            top = item.path.resolve().relative_to(HERE).parts[0]
        except (ValueError, IndexError):
            top = ""
        if top in ROOT_ONLY_DIRS or item.get_closest_marker("root") is not None:
            item.add_marker(skip)
