"""Every registered component, in one place: merge methods, objectives, strategies, pruning
importances, layer-drop selectors and step kinds.

This module imports every implementation and builds the tables; nothing else writes into
them. To add a component, write its class in its own file and list it here. Implementations
never import this module: code that resolves names (``ops``, ``pipeline``, the engine, the
CLI and the app) sits above it, and steps receive it through their context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from .analysis.baselines import angular_block, shortgpt_layers
from .errors import LacoError
from .methods.average import Average
from .methods.base import MergeMethod
from .methods.calibrated import CalibratedRDSC
from .methods.drop import Drop
from .methods.linear import DropLinear
from .methods.lsq import DropLsq
from .methods.official import Official
from .methods.rdsc import RDSC
from .params import ParamDef
from .prune.importance import (
    L1,
    L2,
    Importance,
    Random,
    TaylorFirst,
    TaylorMix,
    TaylorSecond,
    Vectorize,
)
from .recipe import Step
from .search.config import SearchConfig
from .search.objectives import KL, Cosine, Objective, Perplexity
from .search.strategies.base import Strategy
from .search.strategies.evolutionary import Evolutionary
from .search.strategies.greedy import Greedy
from .search.strategies.paper import Paper
from .steps.attention import AttentionStep
from .steps.collapse import CollapseStep
from .steps.drop import DropStep
from .steps.heal import HealStep
from .steps.prune import PruneStep
from .steps.search import SearchStep


class Table(Mapping):
    """A read-only name -> component table; only this module fills it."""

    def __init__(self, items: dict):
        self._items = dict(items)

    def __getitem__(self, name: str):
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Table({list(self._items)})"


def _table(items, key=lambda x: x.name) -> Table:
    return Table({key(x): x for x in items})


@dataclass(frozen=True)
class Registry:
    """Name -> component tables, read-only."""

    methods: Mapping[str, MergeMethod]
    objectives: Mapping[str, Objective]
    strategies: Mapping[str, Strategy]
    importances: Mapping[str, Importance]
    selectors: Mapping[str, Callable]
    steps: Mapping[str, type[Step]]

    @contextmanager
    def registered(self, **extra: Mapping[str, object]) -> Iterator[Registry]:
        """For tests: ``extra`` components (table name -> {name: component}) registered for
        the duration of the block, then removed; a name already taken is refused."""
        added: list[tuple[Table, str]] = []
        try:
            for table, items in extra.items():
                target = getattr(self, table)
                for name, component in items.items():
                    if name in target:
                        raise LacoError(f"'{name}' is registered already in {table}.")
                    target._items[name] = component
                    added.append((target, name))
            yield self
        finally:
            for target, name in added:
                del target._items[name]

    def method(self, name: str) -> MergeMethod:
        return _get(self.methods, name, "merge method")

    def objective(self, name: str) -> Objective:
        return _get(self.objectives, name, "objective")

    def strategy(self, name: str) -> Strategy:
        return _get(self.strategies, name, "strategy")

    def importance(self, name: str) -> Importance:
        return _get(self.importances, name, "importance")

    def selector(self, name: str) -> Callable:
        return _get(self.selectors, name, "layer-drop baseline")

    def step(self, name: str) -> type[Step]:
        return _get(self.steps, name, "step kind")

    def method_params(self) -> dict[str, tuple[ParamDef, ...]]:
        """Every method's declared parameters (the CLI and the app generate controls from it)."""
        return {name: m.params for name, m in self.methods.items()}

    def strategy_params(self) -> dict[str, tuple[ParamDef, ...]]:
        """Every strategy's own settings (CLI flags and app controls are generated from it)."""
        return {name: s.params for name, s in self.strategies.items()}

    def search_components(self, cfg: SearchConfig) -> tuple:
        """The method, objective, strategy and refit method a search config names, with the
        config's method and strategy settings checked (and the strategy's defaults filled
        in, so a recipe records every value the search used)."""
        method = self.method(cfg.method)
        cfg.method_params = method.check(cfg.method_params)
        strategy = self.strategy(cfg.strategy)
        cfg.strategy_params = strategy.settings(cfg.strategy_params)
        if cfg.units not in strategy.units:
            able = ", ".join(n for n, s in self.strategies.items() if cfg.units in s.units)
            raise LacoError(
                f"--units {cfg.units}: the {strategy.name} strategy removes "
                f"{' or '.join(strategy.units)}; use --strategy {able}."
            )
        refit = self.method(cfg.refit) if cfg.refit else None
        if refit is not None and not refit.fitted:
            raise LacoError(f"--refit {cfg.refit}: {self.fitted_choice()}.")
        objective = self.objective(cfg.objective).configured(cfg.objective_params)
        return method, objective, strategy, refit

    def objective_params(self) -> dict[str, tuple[ParamDef, ...]]:
        """Every objective's settings (CLI flags and app controls are generated from it)."""
        return {name: o.params for name, o in self.objectives.items()}

    def fitted_choice(self) -> str:
        """``choose a fitted method: drop_linear or drop_lsq`` from what methods declare."""
        names = [n for n, m in self.methods.items() if m.fitted]
        return "choose a fitted method: " + " or ".join(names)


def _get(table: Mapping, name: str, what: str):
    if name not in table:
        raise LacoError(f"Unknown {what} '{name}'; choose one of: {', '.join(table)}.")
    return table[name]


REGISTRY = Registry(
    methods=_table(
        [Official(), RDSC(), Average(), Drop(), CalibratedRDSC(), DropLinear(), DropLsq()]
    ),
    objectives=_table([Cosine(), KL(), Perplexity()]),
    strategies=_table([Paper(), Greedy(), Evolutionary()]),
    importances=_table(
        [TaylorFirst(), Vectorize(), TaylorSecond(), TaylorMix(), L1(), L2(), Random()]
    ),
    selectors=Table({"shortgpt": shortgpt_layers, "angular": angular_block}),
    steps=_table(
        [CollapseStep, SearchStep, PruneStep, DropStep, AttentionStep, HealStep],
        key=lambda s: s.kind,
    ),
)
