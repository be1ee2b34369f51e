"""Greedy removal: each step accepts the least damaging range (SLEB-style re-scoring)."""

from __future__ import annotations

from ...arch.plan import layer_map
from ...arch.subblocks import ATTENTION, attention_layers, protected
from ...errors import LacoError
from ...params import ParamDef
from .base import Strategy


class Greedy(Strategy):
    """Each step scores every admissible range of 2..C layers of the current model and accepts
    the least damage (1 − score) per removed layer; it stops at the target (or, without one,
    when the best score is ≤ T). Every step re-scores against the dense model, as SLEB
    (Song et al. 2024, arXiv 2402.09025) re-scores after each removal.

    With ``lazy``, ranges are re-scored in order of their last known damage and the step
    stops once the best fresh damage beats every stale one. With ``early_exit``, a range stops
    being scored once it cannot beat the step's best so far (KL and NLL only grow as tokens
    are added; a cosine stays within [−1, 1]): decisions are unchanged, and its logged score
    is then the highest it could still have reached. With a method that has a cheap
    first look (``rdsc_calibrated``), every range is screened cheaply and the ``refine_top``
    best are fitted in full.
    """

    name = "greedy"
    summary = "Each step: score every range of 2..C layers, accept the least damage per layer."
    params = (
        ParamDef(
            "lazy",
            "bool",
            False,
            help="re-score ranges in order of their earlier damage; stop a step once no stale "
            "damage can beat the best fresh one",
        ),
        ParamDef(
            "refine_top",
            "int",
            3,
            low=1,
            high=64,
            help="with a method that has a cheap first look: ranges fitted in full after screening",
        ),
    )
    uses = ("merge_count", "low", "high", "threshold", "early_exit")
    units = ("layers", "blocks")
    walks_path = True

    def reads(self, target: bool) -> set[str]:
        """T stops a search without a target only: with one, the target does."""
        return set(self.uses) - ({"threshold"} if target else set())

    def run(self, s) -> None:
        stale: dict[tuple[int, int], float] = {}  # original span -> last known damage
        while not s.done():
            # a unit: (lo, hi, attention?) — a range to merge, or one layer's attention block
            ranges = [
                (lo, hi, False) for lo, hi in candidate_ranges(s, range(2, s.cfg.merge_count + 1))
            ]
            ranges += [(i, i, True) for i in candidate_attention(s)]
            if not ranges:
                if s.need is not None and not s.cfg.budget:
                    raise LacoError(
                        f"Could not remove {s.need} layers within layers {s.cfg.low}-"
                        f"{s.high - 1}: widen --low/--high or lower the target."
                    )
                return
            lm = layer_map(s.cur)

            def key(r: tuple, lm: list = lm) -> tuple:
                return lm[r[0]][0], lm[r[1]][1], r[2]

            if s.settings["lazy"]:
                ranges.sort(key=lambda r: stale.get(key(r), float("-inf")))
            step = len(s.merges) + 1  # told first: what follows is this step's work
            s.progress({"step": step, "scored": 0, "of": len(ranges), "removed": s.removed})
            s.inputs_at(max(hi for _, hi, _ in ranges))
            cheap = s.method.cheap(s.params)
            first = s.params if cheap is None else cheap
            if s.order is None and s.cfg.early_exit:  # chunk order for pruned scoring
                s.set_order(*ranges[0][:2], first)
            scored = []
            best = [float("inf")]  # the step's best damage so far, read live by the workers

            def ceiling(best: list = best) -> float:
                return best[0]

            # scored in waves of ``workers``; results are consumed in order, so the lazy stop
            # falls where it would with one worker
            for start in range(0, len(ranges), s.workers):
                wave = ranges[start : start + s.workers]
                futs = [
                    s.submit(s.evaluate, lo, hi, first, None, ceiling, att) for lo, hi, att in wave
                ]
                stop = False
                for (lo, hi, att), fut in zip(wave, futs, strict=True):
                    if (
                        s.settings["lazy"]
                        and scored
                        and min(x[0] for x in scored)
                        <= stale.get(key((lo, hi, att)), float("-inf"))
                    ):
                        stop = True  # damage only grows as the model shrinks: the rest cannot win
                        break
                    score, params, partial = fut.result()
                    width = s.unit_size(lo, hi, att)
                    scored.append(((1 - score) / width, lo, hi, score, params, partial, att))
                    s.progress(  # the candidate as it is scored (logged at the step's end)
                        {
                            "step": step,
                            "scored": len(scored),
                            "of": len(ranges),
                            "removed": s.removed,
                            **scored_row(s, lm, lo, hi, score, att),
                        }
                    )
                    stale[key((lo, hi, att))] = scored[-1][0]
                    best[0] = min(best[0], scored[-1][0])
                if stop:
                    for f in futs:  # let the wave finish before the model can change
                        f.result()
                    break
            scored.sort(key=lambda x: x[0])
            if cheap is not None:  # fit the most promising ranges in full
                top = scored[: s.settings["refine_top"]]
                futs = [
                    s.submit(s.evaluate, r[1], r[2], r[6] and {} or s.params, None, None, r[6])
                    for r in top
                ]
                refined = []
                for (_, lo, hi, *_rest, att), fut in zip(top, futs, strict=True):
                    score, params, _ = fut.result()
                    width = s.unit_size(lo, hi, att)
                    refined.append(((1 - score) / width, lo, hi, score, params, None, att))
                scored = sorted(refined, key=lambda x: x[0]) + scored[s.settings["refine_top"] :]
            _, lo, hi, score, params, _, att = scored[0]
            ok = (
                s.need is not None
                or s.need_params is not None
                or s.cfg.budget
                or score > s.cfg.threshold
            )
            for _, lo2, hi2, s2, p2, partial, att2 in scored:
                chosen = ok and (lo2, hi2, att2) == (lo, hi, att)
                s.log(lo2, hi2, s2, chosen, p2, None, partial, att2)
            if not ok:
                return
            s.accept(lo, hi, score, params, att)


def scored_row(s, lm: list, lo: int, hi: int, score: float, attention: bool) -> dict:
    """A candidate just scored, as a log row shows it (original numbering in ``orig``)."""
    row = {"lo": lo, "hi": hi, "orig": [lm[lo][0], lm[hi][1]], "score": score, "layers": s.n()}
    return {**row, "unit": ATTENTION} if attention else row


def candidate_ranges(s, sizes: range) -> list[tuple[int, int]]:
    """Admissible ranges of the current model with hi − lo + 1 in ``sizes``."""
    lm, n = layer_map(s.cur), s.n()
    out = []
    for lo in range(n):
        for size in sizes:
            hi = lo + size - 1
            if hi >= n or hi == lo:
                continue
            if lm[lo][0] < s.cfg.low or lm[hi][1] >= s.high:
                continue
            if s.blocks:
                left = (s.need_params or 0) - s.removed_params()
                if (
                    s.need_params is not None
                    and s.unit_size(lo, hi) * s.layer_size > left + s.layer_size
                ):
                    continue  # would overshoot the target by more than a layer
            elif s.need is not None and hi - lo > s.need - s.removed:
                continue
            out.append((lo, hi))
    return out


def candidate_attention(s) -> list[int]:
    """Layers whose attention a sub-block search may remove (within low/high, not the
    protected first layer of each attention type)."""
    if not s.blocks:
        return []
    lm, keep = layer_map(s.cur), protected(s.cur)
    return [
        i
        for i in attention_layers(s.cur)
        if i not in keep and lm[i][0] >= s.cfg.low and lm[i][1] < s.high
    ]
