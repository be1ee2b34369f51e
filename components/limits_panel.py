"""The app's limits, shown to users: one table built from ``laco_core.loading.limits`` (no logic here)."""

from __future__ import annotations

import gradio as gr

from laco_core.runtime.engine import Engine


def _value(value: int, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 1e6:,.0f} MB"
    if unit == "parameters":
        return f"{value / 1e9:,.1f} B"
    return f"{value:,} {unit}"


def limits_md(engine: Engine) -> str:
    """A Markdown table of every limit in force, with the variable that changes it."""
    mode = (
        "This is a **hosted** instance: models load from Hub ids and `default` only, and the "
        "stricter column of limits applies."
        if engine.hosted
        else "Self-hosted: each limit can be changed with its environment variable."
    )
    rows = "\n".join(
        f"| {what} | {_value(value, unit)} | `{env}` |"
        for what, value, unit, env in engine.limits.table()
    )
    budget = f"{engine.budget / 2**30:.1f} GiB"
    return (
        f"{mode} A request over a limit is refused before any work starts.\n\n"
        f"| limit | value | variable |\n|---|---:|---|\n{rows}\n"
        f"| memory for models and caches (least recently used evicted) | {budget} | "
        "`LACO_MEMORY_GB` |\n"
    )


def build(engine: Engine) -> None:
    """An accordion with the limits table (mounted by app.py under the Model tab)."""
    with gr.Accordion("Limits of this app", open=False, elem_id="limits"):
        gr.Markdown(limits_md(engine), elem_id="limits-table")
