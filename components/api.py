"""The scripted API keeps its signatures while the page streams more.

The page's listeners stream what a person watches (a progress bar with ETA, a log, up to four
answers) and stay private; each named endpoint that scripts already call (``/collapse``,
``/compare``, ``/auto_collapse``, ``/evaluate``, ``/baselines``, ``/load_recipe``) sits on a
hidden trigger with its established inputs and outputs, and relays the same handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gradio as gr


def endpoint(fn: Callable, inputs, outputs, api_name: str, **kwargs):
    """A named endpoint on a hidden trigger (its inputs may be the page's own controls, so
    their validation applies)."""
    trigger = gr.Button(visible=False)
    return trigger.click(fn, inputs, outputs, api_name=api_name, **kwargs)


def hidden(component: type, **kwargs):
    """An invisible output of an endpoint."""
    return component(visible=False, **kwargs)


def relay(updates: Iterator, convert: Callable) -> Iterator:
    """``convert`` every update of a handler's generator; closing the relay closes it (so a
    cancelled script call stops the engine's work, as a Stop on the page does)."""
    try:
        for update in updates:
            yield convert(update)
    finally:
        updates.close()
