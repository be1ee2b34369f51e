"""Shared helpers for the benchmarks: best-of-N wall time and a one-line ratio printer.

Benchmarks print ratios measured in one run on one machine, never timed asserts: a ratio
against a floor measured beside it (one read of the weights, one plain forward) stays
meaningful on a busy 2-core box where absolute times do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Result:
    """One printed figure; ``ok`` is None for figures without a target."""

    name: str
    value: float | None
    target: str | None = None
    ok: bool | None = None
    note: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "SKIP"
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


# Every figure reported in this process, in order; ``python -m bench`` summarises it.
RESULTS: list[Result] = []


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work so wall time covers it (no-op on CPU)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def timeit(
    fn: Callable[[], object],
    repeat: int = 3,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> float:
    """Best wall time of ``repeat`` calls after ``warmup`` untimed ones, in seconds.

    The minimum, not the mean: on a shared machine other processes only ever add time.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def report(
    name: str,
    value: float | None,
    target: str | None = None,
    ok: bool | None = None,
    unit: str = "",
    note: str = "",
) -> Result:
    """Print ``name: value (target ...) PASS/MISS`` and record it in ``RESULTS``."""
    if value is None:
        line = f"{name}: skipped" + (f" ({note})" if note else "")
    else:
        shown = f"{value:.4g}{unit}"
        line = f"{name}: {shown}"
        if target:
            line += f" (target {target})"
        if ok is not None:
            line += " PASS" if ok else " MISS"
        if note:
            line += f"  [{note}]"
    print(line, flush=True)
    result = Result(name, value, target, ok, note)
    RESULTS.append(result)
    return result


def at_most(name: str, value: float, limit: float, note: str = "") -> Result:
    """Report a ratio whose target is ``value <= limit``."""
    return report(name, value, f"≤ {limit:.3g}", value <= limit, note=note)


def at_least(name: str, value: float, limit: float, note: str = "") -> Result:
    """Report a ratio whose target is ``value >= limit``."""
    return report(name, value, f"≥ {limit:.3g}", value >= limit, note=note)


def skipped(name: str, why: str) -> Result:
    """Report a figure that could not be measured here (e.g. ``no CUDA``)."""
    return report(name, None, note=why)
