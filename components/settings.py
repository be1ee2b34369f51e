"""The expert search's settings as controls: the common ones (``SEARCH_PARAMS`` and
``RUN_PARAMS``), each strategy's own and each merge method's, all generated from what is
declared, and read back from the controls' values."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from laco_core.params import validate
from laco_core.registry import REGISTRY
from laco_core.search.config import RUN_PARAMS, SEARCH_PARAMS

from . import params_ui

COMMON = (*SEARCH_PARAMS, *RUN_PARAMS)  # the settings every strategy may read


@dataclass
class SearchControls:
    """The expert search's generated controls: the common settings, each strategy's own and
    each merge method's (one control per declared name; hidden while not read)."""

    common: dict[str, gr.components.Component]
    strategy: dict[str, gr.components.Component]
    method: dict[str, gr.components.Component]

    def inputs(self) -> list[gr.components.Component]:
        return [*self.common.values(), *self.strategy.values(), *self.method.values()]

    def keys(self) -> list[tuple[str, str]]:
        return [(g, n) for g in ("common", "strategy", "method") for n in getattr(self, g)]


def settings_of(keys: list[tuple[str, str]], raw, strategy: str, method: str) -> tuple:
    """``(common settings, strategy settings, method parameters)`` from the controls' values:
    blanks omitted, only the chosen strategy's and method's own (checked where resolved)."""
    split: dict[str, tuple[list, list]] = {g: ([], []) for g in ("common", "strategy", "method")}
    for (group, name), value in zip(keys, raw, strict=True):
        split[group][0].append(name)
        split[group][1].append(value)

    def pick(groups: dict, group: str, selected: str) -> dict:
        return params_ui.values(groups, *split[group][:1], selected, split[group][1])

    common = validate(COMMON, pick({"": COMMON}, "common", ""), "search")
    own = pick(REGISTRY.strategy_params(), "strategy", strategy)
    return common, own, pick(REGISTRY.method_params(), "method", method)
