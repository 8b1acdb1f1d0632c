"""BPF ELF objects: open (with map pinning under a bpffs root), reuse live maps, load, and reach
their programs and maps."""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import os
from types import TracebackType

from .errors import BpfError, capturing, check, errno_now, error
from .ffi import (
    ObjectOpenOpts,
    bpf_map__fd,
    bpf_map__key_size,
    bpf_map__map_flags,
    bpf_map__max_entries,
    bpf_map__name,
    bpf_map__pin_path,
    bpf_map__reuse_fd,
    bpf_map__set_max_entries,
    bpf_map__type,
    bpf_map__value_size,
    bpf_object__close,
    bpf_object__find_map_by_name,
    bpf_object__find_program_by_name,
    bpf_object__load,
    bpf_object__name,
    bpf_object__next_map,
    bpf_object__next_program,
    bpf_object__open_file,
    bpf_program__fd,
    bpf_program__name,
)
from .maps import Map


class BpfObject:
    """An opened (and, after :meth:`load`, loaded) BPF ELF object. Context manager."""

    def __init__(self, ptr: int, path: str, pin_root: str | None) -> None:
        self._ptr: int | None = ptr
        self.path = path
        self.pin_root = pin_root
        self.loaded = False
        self._maps: dict[str, Map] = {}

    @classmethod
    def open(cls, path: str, *, pin_root: str | None = None) -> BpfObject:
        """``bpf_object__open_file``; *pin_root* is where ``LIBBPF_PIN_BY_NAME`` maps are pinned
        (and, when a compatible pin already exists there, reused at :meth:`load`).
        *pin_root* is created if missing; it must be on a bpffs."""
        opts = ObjectOpenOpts(sz=ctypes.sizeof(ObjectOpenOpts))
        if pin_root is not None:
            os.makedirs(pin_root, exist_ok=True)
            opts.pin_root_path = os.fsencode(pin_root)
        with capturing() as lines:
            ptr = bpf_object__open_file(os.fsencode(path), ctypes.byref(opts))
            if not ptr:
                raise error(errno_now(), f"bpf_object__open_file({path})", lines)
        return cls(ptr, path, pin_root)

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def _obj(self) -> int:
        if self._ptr is None:
            raise BpfError(_errno.EBADF, f"BPF object {self.path}: closed")
        return self._ptr

    def close(self) -> None:
        """``bpf_object__close``: frees programs and maps (pinned maps stay pinned)."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            self._maps.clear()
            bpf_object__close(ptr)

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def name(self) -> str:
        return (bpf_object__name(self._obj()) or b"").decode()

    def program_names(self) -> list[str]:
        obj, names, prog = self._obj(), [], None
        while prog := bpf_object__next_program(obj, prog):
            names.append((bpf_program__name(prog) or b"").decode())
        return names

    def map_names(self) -> list[str]:
        obj, names, m = self._obj(), [], None
        while m := bpf_object__next_map(obj, m):
            names.append((bpf_map__name(m) or b"").decode())
        return names

    def _find_map(self, name: str) -> int:
        m: int | None = bpf_object__find_map_by_name(self._obj(), name.encode())
        if not m:
            raise error(
                errno_now(),
                f"no map {name!r} in {self.path} (maps: {', '.join(self.map_names()) or '-'})",
            )
        return m

    def set_max_entries(self, map_name: str, max_entries: int) -> None:
        """Resize a map before :meth:`load` (``bpf_map__set_max_entries``)."""
        ret = bpf_map__set_max_entries(self._find_map(map_name), max_entries)
        check(ret, f"bpf_map__set_max_entries({map_name}, {max_entries})")

    def pin_path(self, map_name: str) -> str | None:
        """Where libbpf pins *map_name* (None if the map is not pinned by name)."""
        p = bpf_map__pin_path(self._find_map(map_name))
        return p.decode() if p else None

    def pinned_map_names(self) -> list[str]:
        """Maps the object pins by name (``LIBBPF_PIN_BY_NAME``): its persistent state."""
        return [n for n in self.map_names() if self.pin_path(n)]

    def map_spec(self, map_name: str) -> tuple[int, int, int, int, int]:
        """(type, key size, value size, flags, max entries) that :meth:`load` creates
        *map_name* with, or requires of a pinned map it reuses."""
        m = self._find_map(map_name)
        return (bpf_map__type(m), bpf_map__key_size(m), bpf_map__value_size(m),
                bpf_map__map_flags(m), bpf_map__max_entries(m))

    def reuse_map(self, map_name: str, existing: Map) -> None:
        """Before :meth:`load`: make *map_name* use the live map *existing* instead of creating
        one (``bpf_map__reuse_fd``, which dups the fd; *existing* may be closed afterwards).
        Refused unless type, key/value sizes, flags and size match: a program loaded against a
        map of another layout would misread every entry."""
        m = self._find_map(map_name)
        want = self.map_spec(map_name)
        have = (existing.map_type, existing.key_size, existing.value_size, existing.map_flags,
                existing.max_entries)
        if want != have:
            raise BpfError(
                _errno.EINVAL,
                f"map {map_name!r}: the live map (id {existing.id}) has type/key/value/flags/"
                f"entries {have}, this object wants {want}",
            )
        with capturing() as lines:
            check(bpf_map__reuse_fd(m, existing.fd), f"bpf_map__reuse_fd({map_name})", lines)

    def load(self) -> None:
        """``bpf_object__load``: create/reuse maps, verify and load programs, pin maps."""
        with capturing() as lines:
            ret = bpf_object__load(self._obj())
            check(ret, f"bpf_object__load({self.path})", lines)
        self.loaded = True

    def program_fd(self, name: str) -> int:
        """fd of the loaded program *name* (the C function name). Owned by the object."""
        prog = bpf_object__find_program_by_name(self._obj(), name.encode())
        if not prog:
            raise error(
                errno_now(),
                f"no program {name!r} in {self.path} "
                f"(programs: {', '.join(self.program_names()) or '-'})",
            )
        fd: int = bpf_program__fd(prog)
        if fd < 0:
            raise error(-fd, f"program {name!r} of {self.path} has no fd (object not loaded?)")
        return fd

    def map(self, name: str) -> Map:
        """The loaded map *name*. Its fd belongs to this object and is closed by :meth:`close`."""
        if name in self._maps:
            return self._maps[name]
        fd = bpf_map__fd(self._find_map(name))
        if fd < 0:
            raise error(-fd, f"map {name!r} of {self.path} has no fd (object not loaded?)")
        m = Map(fd, owns_fd=False, owner=self)
        self._maps[name] = m
        return m

