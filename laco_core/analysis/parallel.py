"""Scoring on several CPU cores: one torch thread per worker, work items side by side.

The forwards a search runs are small (a few hundred tokens × hidden 576 on the default model):
one matmul split over two threads gains little, and when another process holds a core every
op waits on the descheduled thread. The same cores working on different chunks or candidates
do close to twice the work and degrade gracefully under load.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")
R = TypeVar("R")


def default_workers(model: nn.Module) -> int:
    """One worker per torch thread on CPU (at most 8); one on an accelerator."""
    if next(model.parameters()).device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), 8))


class _OneThread:
    """Counts the pools alive: torch runs one intra-op thread while any is, and gets its
    earlier count back when the last one closes.

    Saving and restoring per pool is wrong once two pools overlap (two users' searches):
    the second saves the first's 1 and, closing last, leaves the whole process on one
    thread for good.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.pools = 0
        self.saved = 1

    def enter(self) -> None:
        with self.lock:
            if self.pools == 0:
                self.saved = torch.get_num_threads()
                torch.set_num_threads(1)
            self.pools += 1

    def exit(self) -> None:
        with self.lock:
            self.pools -= 1
            if self.pools == 0:
                torch.set_num_threads(self.saved)


_ONE_THREAD = _OneThread()


@contextmanager
def worker_pool(workers: int) -> Iterator[ThreadPoolExecutor | None]:
    """A thread pool whose workers run torch ops on one thread each; None for one worker.

    torch's intra-op thread count is process-wide: it is 1 while any pool is open and
    restored when the last one closes.
    """
    if workers <= 1:
        yield None
        return
    _ONE_THREAD.enter()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="laco-worker") as pool:
            yield pool
    finally:
        _ONE_THREAD.exit()


def pmap(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` workers, results in order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with worker_pool(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))
