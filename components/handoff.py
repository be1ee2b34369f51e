"""What one tab builder hands the next: the components and events later tabs wire to.

app.py builds the tabs in page order and passes each the parts of earlier tabs it listens
to, by name: ``collapse.built``, never ``parts[3]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import gradio as gr
from gradio.events import Dependency

from .widgets import ClickBridge


class Fanout:
    """Several events that later steps chain on alike (``loaded.then(...)``)."""

    def __init__(self, events: Iterable[Dependency]):
        self.events = list(events)

    def then(self, fn, *args, **kwargs) -> Fanout:
        return Fanout(ev.then(fn, *args, **kwargs) for ev in self.events)


Event = Dependency | Fanout


@dataclass
class Workspace:
    """The "Your work" bar: the session kept in this browser and its loads."""

    browser: gr.BrowserState
    summary: gr.Markdown
    loaded: Dependency  # a session or recipe file loaded
    scripted: Dependency  # ``/load_recipe``


@dataclass
class ModelTab:
    loaded: Fanout  # the session's base model loaded (page load or the Load button)


@dataclass
class SimilarityTab:
    bridge: ClickBridge  # clicks on either heatmap
    hint: gr.Markdown  # the line a heatmap click writes to
    prompts: gr.Textbox  # the calibration prompts later tabs use
    analysis: gr.State  # ``engine.analysis`` matrices of the base model
    analyzed: list[Event] = field(default_factory=list)


@dataclass
class CollapseTab:
    plan: gr.Textbox
    attn: gr.Textbox
    method: gr.Radio
    kind: gr.Radio  # the map the plan is drawn on
    msg: gr.Markdown  # the line under the plan
    controls: list[gr.components.Component]  # the method's parameters (``PARAM_NAMES`` order)
    built: list[Event] = field(default_factory=list)  # events of this tab that add a model


@dataclass
class EvaluateTab:
    changed: list[Event] = field(default_factory=list)  # events that change the session
