"""Long-job slots: how many long jobs (searches, builds, heals, exports, evaluations,
comparisons, lm-eval runs, threshold checks) one session runs at once."""

from __future__ import annotations

import itertools
import threading

from ..errors import LimitExceeded

BUSY = (
    "One of your long jobs (a search, build, heal, export, evaluation, comparison, lm-eval run "
    "or threshold check) is still running: wait for it or stop it first. Long jobs at once per "
    "session: {limit} (LACO_MAX_LONG_JOBS raises it on a self-hosted instance)."
)


class Slot:
    """One long-job slot of an owner, taken when made, given back by ``release`` (or at the
    end of a ``with`` block). Releasing twice is harmless: a job's thread and its handler may
    both do it."""

    def __init__(self, slots: JobSlots, owner: str | None, token: object | None):
        self._slots, self.owner = slots, owner
        self._key = slots._claim(owner, token)

    def release(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            self._slots._release(self.owner, key)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class JobSlots:
    """Per-owner counters of running long jobs, bounded by ``limit``.

    A slot is keyed by its job's token (the job's stop Event): work that the job starts
    inside itself with the same token (a build's ``engine.run`` inside a job that holds the
    slot already) nests in that slot instead of asking for a second one. A cancelled job keeps
    its slot until its worker notices the stop event, so the slot frees within moments.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._running: dict[str, dict[int, int]] = {}  # owner -> id(token) -> nesting depth
        self._lock = threading.Lock()
        self._anonymous = itertools.count(1)

    def running(self, owner: str) -> int:
        with self._lock:
            return len(self._running.get(owner, {}))

    def hold(self, owner: str | None, token: object | None = None) -> Slot:
        """One slot of ``owner`` from now until the returned ``Slot`` is released (owner None:
        no limit); a ``token`` that holds one of ``owner``'s slots already nests in it.

        Raises:
            LimitExceeded: when ``owner`` already runs ``limit`` long jobs.
        """
        return Slot(self, owner, token)

    def _claim(self, owner: str | None, token: object | None) -> int | None:
        if owner is None:
            return None
        key = id(token) if token is not None else -next(self._anonymous)  # a slot of its own
        with self._lock:
            held = self._running.get(owner, {})
            if token is None or key not in held:
                if len(held) >= self.limit:
                    raise LimitExceeded(BUSY.format(limit=self.limit))
            self._running.setdefault(owner, {})[key] = held.get(key, 0) + 1
        return key

    def _release(self, owner: str, key: int) -> None:
        with self._lock:
            held = self._running[owner]
            held[key] -= 1
            if not held[key]:
                del held[key]
            if not held:
                del self._running[owner]
