"""LaCo Algorithm 1 (Yang et al. 2024, arXiv 2402.11187), as the released code runs it."""

from __future__ import annotations

from collections import deque

from ...arch.plan import layer_map
from ...errors import LacoError
from ...params import ParamDef
from ..speculation import Done
from .base import Strategy

# threshold decrement between passes when a target is not reached yet
PASS_STEP = 0.05


class Paper(Strategy):
    """l = H − C; while l ≥ L: merge l..min(l+C−1, last) of the current model, accept if the
    score against the dense model is > T (then l −= I, and l = count − 1 − C if l is past the
    last layer), else l −= 1. With a target, further top-down passes lower T by 0.05.

    Candidates below the current one are scored ahead on the other workers as if everything
    were rejected; decisions are taken in scan order only, so they never depend on the
    number of workers.
    """

    name = "paper"
    summary = "LaCo Algorithm 1: top-down scan, accept a merge of C layers while score > T."
    params = (
        ParamDef(
            "interval",
            "int",
            2,
            low=1,
            help="I: how far the scan jumps down after an accepted merge",
        ),
    )
    uses = ("merge_count", "low", "high", "threshold", "early_exit")
    scans = True

    def run(self, search) -> None:
        threshold = search.cfg.threshold
        while True:
            self.scan(search, threshold)
            if search.need is None or search.done():
                return
            if threshold <= 0:
                raise LacoError(
                    f"Could not remove {search.need} layers within layers "
                    f"{search.cfg.low}-{search.high - 1}: widen --low/--high or lower the target."
                )
            threshold = max(threshold - PASS_STEP, 0.0)

    def scan(self, s, threshold: float) -> None:
        """One top-down pass."""
        c, interval = s.cfg.merge_count, s.settings["interval"]
        lm = layer_map(s.cur)
        high = sum(1 for r in lm if r[0] < s.high)  # H in the current model's indices
        low = sum(1 for r in lm if r[1] < s.cfg.low)  # L likewise (identity on the first pass)
        lay = high - c
        pending: deque = deque()  # (lo, hi, future) in scan order
        nxt = lay

        def fill() -> None:
            nonlocal nxt
            # twice the workers in flight, so a worker done early picks up the next at once
            ahead = 1 if s.pool is None else 2 * s.workers
            while len(pending) < ahead and nxt >= low:
                hi = s.cap(nxt, min(nxt + c - 1, s.n() - 1))
                s.inputs_at(hi)  # every input a worker reads exists before it starts
                pending.append((nxt, hi, s.submit(s.evaluate, nxt, hi, s.params, threshold)))
                nxt -= 1

        try:
            while lay >= low and not s.done():
                if s.order is None and s.cfg.early_exit:
                    hi = s.cap(lay, min(lay + c - 1, s.n() - 1))
                    first = s.set_order(lay, hi, s.params)
                    if first is not None and not pending and nxt == lay:
                        score, used = first
                        pending.append((lay, hi, Done((score, used, None))))
                        nxt -= 1
                fill()
                lo, hi, fut = pending.popleft()
                score, params, scored = fut.result()
                ok = score > threshold
                s.log(lo, hi, score, ok, params, threshold, scored)
                if ok:
                    s.drain(pending)
                    s.accept(lo, hi, score, params)
                    lay -= interval
                    if lay >= s.n():
                        lay = s.n() - 1 - c
                    nxt = lay
                else:
                    lay -= 1
        finally:
            s.drain(pending)
