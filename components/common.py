"""Small glue shared by the tab builders: errors -> gr.Error, GPU decoration, builds, params.

User errors (``LacoError``) reach the UI with their message and one log line. Anything else
gets a short message with an error id; the traceback goes to the server log only. On a hosted
instance, absolute paths in messages are replaced: visitors never learn the server's layout.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import uuid
from collections.abc import Callable

import gradio as gr
import spaces

from laco_core.errors import LacoError
from laco_core.loading.limits import hosted
from laco_core.loading.models import LoadedModel
from laco_core.pipeline import recipe_from_dict
from laco_core.recipe import Recipe
from laco_core.runtime.engine import Engine

from .state import Entry, Session

log = logging.getLogger("laco.app")
LONG_GROUP = "long"  # searches, heals, baselines, exports: one at a time
SHORT_GROUP = "short"  # previews, analyses, compares, evaluations of built models
# Default of handlers' ``progress`` argument: gradio spots the instance and hands each event
# its own tracker, so one shared default is safe.
PROGRESS = gr.Progress()


# an absolute POSIX path (not a Hub id "org/name", not a URL's "//host/…")
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+-]+/)*[\w.@+-]*")


def public_message(message: str) -> str:
    """``message`` as a visitor may see it: server paths hidden when hosted."""
    return _ABS_PATH.sub("<server path>", message) if hosted() else message


def _translate(e: BaseException, name: str) -> gr.Error:
    if isinstance(e, LacoError):
        log.info("user error in %s: %s", name, e)  # one line; no traceback for a user error
        return gr.Error(public_message(str(e)), print_exception=False)
    eid = uuid.uuid4().hex[:8]
    log.exception("internal error %s in %s", eid, name)
    return gr.Error(f"Something went wrong inside the app (error id {eid}); it keeps serving.")


def handler(fn: Callable) -> Callable:
    """Errors -> ``gr.Error`` (see the module docstring)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except GeneratorExit:
                raise
            except Exception as e:
                raise _translate(e, fn.__name__) from e

        return gen

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise _translate(e, fn.__name__) from e

    return plain


def gpu(fn: Callable) -> Callable:
    """``@spaces.GPU`` (a no-op off ZeroGPU) over ``handler``."""
    return spaces.GPU(handler(fn))


user_errors = handler


def base_of(engine: Engine, session: Session) -> LoadedModel:
    """The session's base model (a cache hit unless evicted, then reloaded)."""
    return engine.load(session.spec, session.dtype, session.device)


def pick_build(session: Session, did: str | None) -> str:
    """The build id to use: the one picked, else the session's latest."""
    did = did or session.current
    if not did:
        raise LacoError("No collapsed model yet: build one in the Collapse tab first.")
    if session.get(did) is None:  # the engine's words for another session's id: nothing leaks
        raise LacoError(f"Unknown model id '{did}': build or load one first.")
    return did


def model_of(engine: Engine, session: Session, did: str | None):
    """``(id, model, base)`` of a build of this session: the build's OWN base and tokenizer.

    A build the engine no longer knows (e.g. after a restart) is registered again from the
    recipe JSON the session keeps, and rebuilt.
    """
    did = pick_build(session, did)
    try:
        engine.build(did, session.token())
    except LacoError:
        entry = session.get(did)
        new = engine.add_recipe(recipe_from_dict(entry.recipe), session.token(), entry.label)
        rename(session, did, new)
        did = new
    model, base = engine.model(did, session.token())
    return did, model, base


def rename(session: Session, old: str, new: str) -> None:
    entry = session.get(old)
    if entry is not None:
        entry.id = new
    if session.current == old:
        session.current = new


def remember(engine: Engine, session: Session, did: str, metrics: dict | None = None) -> Entry:
    """Record engine build ``did`` in the session (its recipe as JSON, no tensors)."""
    b = engine.build(did, session.token())
    entry = Entry(did, b.label, recipe_json(b.recipe), dict(metrics or {}))
    session.add(entry)
    return entry


def recipe_json(recipe: Recipe) -> dict:
    return recipe.to_dict()[0]


def build_choices(session: Session) -> gr.Dropdown:
    """Refresh a 'which model' dropdown after a build."""
    return gr.Dropdown(choices=session.choices(), value=session.current)


def fmt_params(n: int | float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{int(n):,}"
