"""Long-job slots: how many searches, builds, heals or exports one session runs at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import LimitExceeded


class JobSlots:
    """Per-owner counters of running long jobs, bounded by ``limit``.

    A cancelled job keeps its slot until its worker notices the stop event (at the next
    layer it would run), so the slot frees within moments of a cancel.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def running(self, owner: str) -> int:
        with self._lock:
            return self._running.get(owner, 0)

    @contextmanager
    def hold(self, owner: str | None) -> Iterator[None]:
        """One slot of ``owner`` for the block (owner None: no limit).

        Raises:
            LimitExceeded: when ``owner`` already runs ``limit`` long jobs.
        """
        if owner is None:
            yield
            return
        with self._lock:
            running = self._running.get(owner, 0)
            if running >= self.limit:
                raise LimitExceeded(
                    "One of your long jobs (a search, build, heal or export) is still running: "
                    "wait for it or stop it first. Long jobs at once per session: "
                    f"{self.limit} (LACO_MAX_LONG_JOBS raises it on a self-hosted instance)."
                )
            self._running[owner] = running + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[owner] -= 1
                if not self._running[owner]:
                    del self._running[owner]
