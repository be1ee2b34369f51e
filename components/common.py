"""Small glue shared by the tab builders: user errors -> gr.Error, GPU decoration, base model."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import gradio as gr
import spaces

from laco_core.engine import Engine
from laco_core.errors import LacoError
from laco_core.models import LoadedModel

from .state import Session

GPU_GROUP = "model"  # every listener that runs the model shares one concurrency group
# Default of handlers' ``progress`` argument: gradio spots the instance and hands each event
# its own tracker, so one shared default is safe.
PROGRESS = gr.Progress()


def gpu(fn: Callable) -> Callable:
    """``@spaces.GPU`` (a no-op off ZeroGPU) plus LacoError -> ``gr.Error`` with its message."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except LacoError as e:
                raise gr.Error(str(e)) from e

        return spaces.GPU(gen)

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LacoError as e:
            raise gr.Error(str(e)) from e

    return spaces.GPU(plain)


def user_errors(fn: Callable) -> Callable:
    """LacoError -> ``gr.Error`` for handlers that never touch the model."""

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LacoError as e:
            raise gr.Error(str(e)) from e

    return plain


def base_of(engine: Engine, session: Session) -> LoadedModel:
    """The session's base model (a cache hit unless evicted, then reloaded)."""
    return engine.load(session.spec, session.dtype, session.device)


def pick_build(session: Session, did: str | None) -> str:
    """The derived-model id to use: the one picked, else the session's latest."""
    did = did or session.current
    if not did or session.get(did) is None:
        raise LacoError("No collapsed model yet: build one in the Collapse tab first.")
    return did


def build_choices(session: Session) -> gr.Dropdown:
    """Refresh a 'which collapsed model' dropdown after a build."""
    return gr.Dropdown(choices=session.choices(), value=session.current)


def fmt_params(n: int | float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{int(n):,}"
