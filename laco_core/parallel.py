"""Scoring on several CPU cores: one torch thread per worker, work items side by side.

The forwards a search runs are small (a few hundred tokens × hidden 576 on the default model):
one matmul split over two threads gains little, and when another process holds a core every
op waits on the descheduled thread. The same cores working on different chunks or candidates
do close to twice the work and degrade gracefully under load.
"""

from __future__ import annotations

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


@contextmanager
def worker_pool(workers: int) -> Iterator[ThreadPoolExecutor | None]:
    """A thread pool whose workers run torch ops on one thread each; None for one worker.

    torch's intra-op thread count is process-wide: it is set to 1 for the pool's lifetime
    and restored after.
    """
    if workers <= 1:
        yield None
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="laco-worker") as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def pmap(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` workers, results in order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with worker_pool(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))
