"""Run the benchmarks: ``python -m bench`` (all) or ``python -m bench core search`` (some).

Every ``bench/bench_<name>.py`` module's ``main()`` runs in order (``core`` first, then the
rest by name); a module that crashes is reported and the others still run.
``LACO_BENCH_THREADS=N`` sets torch's CPU threads first; without it, a machine whose load
average exceeds its core count runs with one thread.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from . import common  # noqa: E402

FIRST = ("core",)


def available() -> list[str]:
    """Benchmark names (``bench_<name>.py``), ``core`` first."""
    names = sorted(p.stem[len("bench_") :] for p in Path(__file__).parent.glob("bench_*.py"))
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default all): {', '.join(names)}"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    selected = args.names or names
    import torch

    threads = os.environ.get("LACO_BENCH_THREADS")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if threads:
        torch.set_num_threads(int(threads))
    elif load > cores:
        # oversubscribed: every multi-threaded op then waits for a descheduled thread, which
        # times the scheduler, not our code; one thread per process measures steadily
        torch.set_num_threads(1)
        print(
            f"load average {load:.1f} > {cores} cores: 1 torch thread (LACO_BENCH_THREADS overrides)"
        )
    summary: list[tuple[str, float, list[common.Result], str | None]] = []
    for name in selected:
        print(f"\n######## bench {name} ########", flush=True)
        start, first = time.perf_counter(), len(common.RESULTS)
        error = None
        try:
            importlib.import_module(f"bench.bench_{name}").main()
        except Exception as e:  # keep going: one broken benchmark must not hide the others
            traceback.print_exc()
            error = f"{type(e).__name__}: {e}"
        summary.append((name, time.perf_counter() - start, common.RESULTS[first:], error))

    print("\n######## summary ########")
    for name, seconds, results, error in summary:
        counts = {s: sum(r.status == s for r in results) for s in ("PASS", "MISS", "SKIP")}
        state = f"CRASHED ({error})" if error else "ok"
        print(
            f"{name:<10} {state:<8} {counts['PASS']} pass, {counts['MISS']} miss, "
            f"{counts['SKIP']} skipped, {seconds:.1f} s"
        )
        for r in results:
            if r.status == "MISS":
                print(f"    MISS {r.name}: {r.value:.4g} (target {r.target})")
    return 1 if any(error for *_, error in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
