"""How much memory the engine may use, and giving freed memory back to the system.

The default budget is 60 % of the memory this process may really use: the machine's RAM,
or the container's cgroup limit when that is lower (a Space's container sees the host's RAM
through ``sysconf`` but is killed at its own limit).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

from ..errors import LacoError

DEFAULT_SHARE = 0.6
_CGROUP_FILES = (
    "/sys/fs/cgroup/memory.max",  # cgroup v2
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
)


def system_memory() -> int:
    """Bytes of RAM this process may use: physical memory, capped by a cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 16 * 2**30
    for name in _CGROUP_FILES:
        try:
            raw = Path(name).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            total = int(raw)
    return total


def default_budget_bytes() -> int:
    """``LACO_MEMORY_GB``, else 60 % of ``system_memory()``."""
    raw = os.environ.get("LACO_MEMORY_GB")
    if raw:
        try:
            gb = float(raw)
        except ValueError:
            gb = float("nan")
        if not gb > 0:
            raise LacoError(f"LACO_MEMORY_GB={raw!r} is not a positive number of GB.")
        return int(gb * 2**30)
    return int(DEFAULT_SHARE * system_memory())


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return 0


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:  # pragma: no cover
        return None


def trim() -> None:
    """Return freed heap pages to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Tensors freed by an eviction go back to malloc, which keeps many of them in its arenas;
    without this, RSS after evictions stays at its high-water mark.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
