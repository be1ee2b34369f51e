"""The page kept with the session: the plan being made (ranges, attention removals), the merge
method and its parameters, the map, the open tab and the Compare prompt are written into
``Session.ui`` whenever they change (so into this browser and the session file), and a page
load puts them back once its model is loaded; a loaded session file puts back its own. A page
opened with a link shows the link's plan on the Collapse tab instead (``links``).
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from laco_core import schema
from laco_core.registry import REGISTRY

from . import links
from .handoff import CollapseTab, ModelTab, Workspace
from .method_picker import METHOD_PARAMS, PARAM_NAMES
from .params_ui import values
from .plan_map import MAPS
from .session_panel import snapshot
from .state import Session

TABS = ("model", "similarity", "collapse", "compare", "evaluate", "export")  # app.py's tab ids
# once a load has put the page back: the body says so (``data-laco-page="ready"``, what
# scripts and tests wait for before clicking), and a page opened with a link scrolls to the
# plan it drew (below the Best collapse panel)
AFTER_LOAD = """() => { document.body.dataset.lacoPage = 'ready';
  if (/[?&](plan|attn|recipe)=/.test(location.search)) setTimeout(() =>
  document.getElementById('plan-msg')?.scrollIntoView({block: 'center'}), 300); }"""


def keep_page(
    session: Session, plan: str, attn: str, method: str, kind: str, prompt: str, *param_values
):
    """Write the page's plan, method (and its parameters), map and prompt into the session."""
    texts = {"plan": plan, "attn": attn, "method": method, "map": kind, "prompt": prompt}
    ui = {k: str(v or "")[: schema.SESSION_UI[k]] for k, v in texts.items()}
    params = values(METHOD_PARAMS, PARAM_NAMES, method, param_values) if param_values else {}
    ui["params"] = {
        k: v[: schema.MAX_TEXT] if isinstance(v, str) else v
        for k, v in params.items()
        if isinstance(v, (bool, int, float, str))
    }
    session.ui = {**session.ui, **ui}
    return session, snapshot(session)


def keep_tab(tab: str, session: Session):
    """Remember the open tab."""
    session.ui = {**session.ui, "tab": tab}
    return session, snapshot(session)


def _controls(method: str | None, params: dict) -> list:
    """Updates of the method-parameter controls (``PARAM_NAMES`` order) for ``params``."""
    return [gr.update(value=params[n]) if n in params else gr.skip() for n in PARAM_NAMES]


def _unchanged(session: Session) -> tuple:
    """:func:`reopen`'s outputs, changing nothing."""
    return (session, *([gr.skip()] * (7 + len(PARAM_NAMES))))


def reopen(session: Session, request: gr.Request):
    """Once per page load, after its model is loaded: a link's plan (on the Collapse tab, with
    a line saying it came from a link), else the page this session kept.

    Returns updates for: session, plan, attn, method, map, prompt, message line, tabs, and
    the method-parameter controls.
    """
    skip = gr.skip()
    if session.url_applied:
        return _unchanged(session)
    session.url_applied = True
    query = dict(request.query_params) if request is not None else {}
    link = links.safe_read(query, session.num_layers)
    if link is not None:
        method = link["method"]
        params = links.param_values(method, link["params"], as_text=True)
        return (
            session,
            skip if link["plan"] is None else link["plan"],
            skip if link["attn"] is None else link["attn"],
            method or skip,
            skip,
            skip,
            link["note"],
            gr.Tabs(selected="collapse"),
            *_controls(method, params),
        )
    return kept_page(session, "↻ Your plan from your last visit.")


def from_file(session: Session):
    """After a load: a session file's page (``Session.page_from_file``), put back as a page
    load puts back the one this browser kept. Same updates as :func:`reopen`."""
    if not session.page_from_file:
        return _unchanged(session)
    session.ui = {**session.ui, **session.page_from_file}
    session.page_from_file = None
    return kept_page(session, "↻ The plan from the session file you loaded.")


def kept_page(session: Session, note: str):
    """Updates that put back the page kept in ``session.ui`` (:func:`reopen`'s outputs);
    ``note`` goes on the message line when there is a plan."""
    skip = gr.skip()
    ui = session.ui
    if not ui:
        return _unchanged(session)
    method = ui.get("method") if ui.get("method") in REGISTRY.methods else None
    params = links.param_values(method, ui.get("params") or {})

    def text(key: str):
        return ui[key] if isinstance(ui.get(key), str) else skip

    return (
        session,
        text("plan"),
        text("attn"),
        method or skip,
        ui["map"] if ui.get("map") in MAPS else skip,
        ui["prompt"] if ui.get("prompt") else skip,
        note if ui.get("plan") else skip,
        gr.Tabs(selected=ui["tab"]) if ui.get("tab") in TABS else skip,
        *_controls(method, params),
    )


def wire(
    session: gr.State,
    work: Workspace,
    model: ModelTab,
    collapse: CollapseTab,
    tabs: gr.Tabs,
    tab_items: dict[str, gr.Tab],
    prompt: gr.Textbox,
) -> None:
    """Keep the page on every change; put it back (or a link's plan) once the model loads, and
    a session file's page once the file is loaded."""
    instant = dict(api_visibility="private", queue=False, show_progress="hidden")
    page = [collapse.plan, collapse.attn, collapse.method, collapse.kind, prompt]
    gr.on(
        [c.change for c in (*page, *collapse.controls)],
        keep_page,
        [session, *page, *collapse.controls],
        [session, work.browser],
        trigger_mode="always_last",
        **instant,
    )
    for tab_id, item in tab_items.items():
        item.select(partial(keep_tab, tab_id), session, [session, work.browser], **instant)
    shown = [session, *page, collapse.msg, tabs, *collapse.controls]
    model.loaded.then(reopen, session, shown, **instant).then(None, js=AFTER_LOAD)
    work.loaded.then(from_file, session, shown, **instant)
