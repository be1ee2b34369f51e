"""Evolutionary search over which layers to remove, in the spirit of EvoPress (Sieberling et al.
2024, arXiv 2410.14649): seeded by the greedy plan, mutated by swapping a removed layer for a
kept one (the size stays the target's), selected in stages on a growing token budget."""

from __future__ import annotations

import random

from ...arch.plan import layer_groups, plan_of
from ...errors import LacoError
from ...params import ParamDef
from ..objectives import Partial
from .base import Strategy
from .greedy import Greedy


class Evolutionary(Strategy):
    """(1 + λ) evolution of a set of removed layers, fitness = the objective (KL by default).

    The greedy strategy finds the seed. Each generation draws ``population`` offspring, each
    the parent with one or two removed layers swapped for kept ones; offspring are scored on
    a few calibration chunks, the best quarter on half of them, the best one on all of them,
    and it replaces the parent when it scores higher on all of them. Only plain layer drops
    are searched (``--method drop``; refit the result with ``--refit drop_lsq``). Every
    fitness is computed from the dense model's cached activations: a candidate runs only its
    kept layers above its first removed one.
    """

    name = "evo"
    summary = "Evolutionary search over removed layers (EvoPress-style), seeded by greedy."
    params = (
        *Greedy.params,  # the greedy seed's
        ParamDef(
            "generations", "int", 20, low=0, high=10_000, help="generations after the greedy seed"
        ),
        ParamDef("population", "int", 8, low=1, high=1_000, help="offspring per generation"),
        ParamDef("seed", "int", 0, low=0, help="random seed of the mutations"),
    )
    uses = ("merge_count", "low", "high", "early_exit")

    def supports(self, method) -> bool:
        return method.passthrough is None  # plain layer drops

    def run(self, s) -> None:
        if not self.supports(s.method):
            raise LacoError(
                "The evolutionary strategy searches plain layer drops: use --method drop "
                "(and --refit drop_lsq to refit the result)."
            )
        if s.need is None:
            raise LacoError("The evolutionary strategy needs a target (--target-ratio/-layers).")
        Greedy().run(s)
        n = len(s.dense_layers())
        eligible = [i for i in range(max(s.cfg.low, 1), s.high) if i < n]
        parent = frozenset(i for lo, hi in plan_of(s.cur) for i in range(lo + 1, hi + 1))
        rng = random.Random(s.settings["seed"])
        chunks = list(range(len(s.cache.chunks)))
        stages = [
            (max(1, len(chunks) // 8), s.settings["population"]),
            (max(1, len(chunks) // 2), max(1, s.settings["population"] // 4)),
        ]
        memo: dict[tuple[frozenset, int], float] = {}

        def fitness(removed: frozenset, budget: int) -> float:
            key = (removed, budget)
            if key not in memo:
                memo[key] = self.score(s, removed, chunks[:budget])
            return memo[key]

        best = fitness(parent, len(chunks))
        for gen in range(s.settings["generations"]):
            offspring = {
                self.mutate(parent, eligible, rng) for _ in range(s.settings["population"])
            }
            offspring.discard(parent)
            pool = list(offspring)
            for budget, keep in stages:
                futs = [s.submit(fitness, c, budget) for c in pool]
                ranked = sorted(
                    zip(pool, [f.result() for f in futs], strict=True), key=lambda x: -x[1]
                )
                pool = [c for c, _ in ranked[:keep]]
            if not pool:
                continue
            challenger = pool[0]
            score = fitness(challenger, len(chunks))
            improved = score > best
            s.event_log(
                {
                    "generation": gen + 1,
                    "removed": sorted(challenger),
                    "score": score,
                    "accepted": improved,
                }
            )
            if improved:
                parent, best = challenger, score
        self.adopt(s, parent, best)

    @staticmethod
    def mutate(parent: frozenset, eligible: list[int], rng: random.Random) -> frozenset:
        """Swap one (sometimes two) removed layers for kept ones; layer 0 is always kept."""
        new = set(parent)
        for _ in range(1 if rng.random() < 0.7 else 2):
            kept = [i for i in eligible if i not in new]
            if not kept or not new:
                break
            new.discard(rng.choice(sorted(new)))
            new.add(rng.choice(kept))
        return frozenset(new)

    @staticmethod
    def score(s, removed: frozenset, chunks: list[int]) -> float:
        """The objective of the dense model without ``removed`` layers, on ``chunks``."""
        lo = min(removed)
        layers = s.dense_layers()
        types = s.dense_types()
        keep = [i for i in range(lo, len(layers)) if i not in removed]
        suffix = ([layers[i] for i in keep], [types[i] for i in keep])
        p = Partial()
        for k in chunks:
            c = s.cache.chunks[k]
            h = s.final_from(suffix, c.inputs[lo], k)
            p.add(*s.objective.stat(s.cache, s.dense, c, h), len(c.lengths))
        return s.objective.value(s.cache, p)

    @staticmethod
    def adopt(s, removed: frozenset, score: float) -> None:
        """Make ``removed`` the search's result: the dense model without those layers."""
        n = len(s.dense_layers())
        ranges = []
        for i in sorted(removed):
            if ranges and ranges[-1][1] == i - 1:
                ranges[-1] = (ranges[-1][0], i)
            else:
                ranges.append((i - 1, i))
        s.restart()
        for lo, hi in layer_groups(ranges, n)[::-1]:  # top-down: lower indices stay valid
            if hi > lo:
                s.accept(lo, hi, score, {})
