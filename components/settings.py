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


GROUPS = ("common", "strategy", "objective", "method")


def declared(group: str) -> dict:
    """Component name -> its declared settings, for one group of the expert search."""
    if group == "common":
        return {"": COMMON}
    table = {
        "strategy": REGISTRY.strategies,
        "objective": REGISTRY.objectives,
        "method": REGISTRY.methods,
    }[group]
    return {name: x.params for name, x in table.items()}


@dataclass
class SearchControls:
    """The expert search's generated controls: the common settings, each strategy's,
    objective's and merge method's own (one control per declared name; hidden while the
    chosen component does not declare it)."""

    common: dict[str, gr.components.Component]
    strategy: dict[str, gr.components.Component]
    objective: dict[str, gr.components.Component]
    method: dict[str, gr.components.Component]

    @classmethod
    def make(cls, chosen: dict[str, str]) -> SearchControls:
        """The controls, made in the current Blocks context, one row per group; ``chosen``:
        group -> the component selected at first."""
        made = {}
        for group in GROUPS:
            with gr.Row(elem_classes=["laco-row"]):
                made[group] = params_ui.controls(declared(group), chosen.get(group, ""))
        return cls(**made)

    def inputs(self) -> list[gr.components.Component]:
        return [c for g in GROUPS for c in getattr(self, g).values()]

    def keys(self) -> list[tuple[str, str]]:
        return [(g, n) for g in GROUPS for n in getattr(self, g)]


@dataclass
class Settings:
    """What the controls hold for the chosen components (blanks omitted)."""

    common: dict
    strategy: dict
    objective: dict
    method: dict


def settings_of(keys: list[tuple[str, str]], raw, chosen: dict[str, str]) -> Settings:
    """The chosen components' settings from the controls' values (``keys`` as
    ``SearchControls.keys``; ``chosen``: group -> component name). The common ones are
    checked here, the others where the components are resolved."""
    split: dict[str, tuple[list, list]] = {g: ([], []) for g in GROUPS}
    for (group, name), value in zip(keys, raw, strict=True):
        split[group][0].append(name)
        split[group][1].append(value)
    got = {
        g: params_ui.values(declared(g), split[g][0], chosen.get(g, ""), split[g][1])
        for g in GROUPS
    }
    got["common"] = validate(COMMON, got["common"], "search")
    return Settings(**got)
