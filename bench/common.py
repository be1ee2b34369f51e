"""Shared helpers for the benchmarks: best-of-N wall time, a one-line ratio printer, the app in a
subprocess.

Benchmarks print ratios measured in one run on one machine, never timed asserts: a ratio
against a floor measured beside it (one read of the weights, one plain forward) stays
meaningful on a busy 2-core box where absolute times do not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

ROOT = Path(__file__).resolve().parent.parent


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


def serve_app(env: dict[str, str], log: IO[str], timeout: float):
    """``python app.py`` in a subprocess on a free local port, once gradio_client connects.

    Args:
        env: Variables set over this process's environment (``LACO_CACHE``, ...).
        log: Where the app's stdout and stderr go.
        timeout: Seconds from the start until a client must have connected.

    Returns:
        (process, url, client, seconds from the start until the client connected).
    """
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        **env,
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early; see {log.name}")
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            raise RuntimeError(f"app did not start within {timeout:.0f} s; see {log.name}")
        try:
            return proc, url, Client(url, verbose=False), time.perf_counter() - t0
        except Exception:
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    """End an app started by :func:`serve_app` (killed if it does not exit within 10 s)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
