"""The compiled datapath: bpf/lb.bpf.c built into lb.bpf.o next to this file.

`make build` (and `pip install`, through setup.py) compiles it here, so an installed pyloxi
carries its own datapath and never looks for the source tree.
"""

from __future__ import annotations

import os
from importlib import resources

OBJECT_NAME = "lb.bpf.o"
ENV = "PYLOXI_BPF_OBJECT"


class ObjectMissing(FileNotFoundError):
    """The compiled datapath is not where it was asked for, nor installed."""


def locate_object(explicit: str | None = None) -> str:
    """The datapath object to load: `explicit` (a flag) if given, else $PYLOXI_BPF_OBJECT, else
    the one installed with this package."""
    for path, given_as in ((explicit, "--bpf-object"), (os.environ.get(ENV), f"${ENV}")):
        if path:
            if not os.path.isfile(path):
                raise ObjectMissing(f"{given_as} {path}: no such file")
            return os.path.abspath(path)
    installed = resources.files(__name__) / OBJECT_NAME
    if installed.is_file():
        return str(installed)
    raise ObjectMissing(
        f"the compiled datapath {OBJECT_NAME} is not installed with pyloxi ({installed}): "
        f"run `make build` in the source checkout (or reinstall pyloxi with clang and "
        f"libbpf-dev present), or pass --bpf-object")
