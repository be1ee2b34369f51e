"""Keep the work: the session lives in the browser and comes back after a reload; one JSON file
saves or restores it; a recipe or a mergekit YAML loads as a build (links: ``links``).

What the browser keeps is the session's JSON (``Session.to_dict``): recipes as JSON, labels,
metrics and the owner token, never tensors. A build the engine no longer holds (a restart, a
model evicted) is registered again from its recipe and rebuilt when first used
(``common.model_of``). Everything read back from the browser or a file is checked like any
user input: recipes are parsed by the engine's own readers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import gradio as gr

from laco_core import schema
from laco_core.errors import LacoError
from laco_core.pipeline import read_recipe
from laco_core.recipe import RECIPE_FILE, TENSORS_FILE
from laco_core.registry import REGISTRY
from laco_core.runtime.engine import Engine

from . import api
from .common import LONG_GROUP, PROGRESS, gpu, remember, user_errors
from .handoff import Event, Workspace
from .state import SESSION_FORMAT, Session

log = logging.getLogger("laco.app")
STORAGE_KEY = "laco-explorer-session-v1"
# The browser encrypts the stored session with this secret; Gradio sends it to the page, so it
# protects nothing. A fixed default lets a session survive a server restart; set
# LACO_BROWSER_SECRET on an instance to tie stored sessions to it.
DEFAULT_SECRET = "laco-explorer"
RECIPE_SUFFIXES = {".json", ".yaml", ".yml", ".safetensors"}


def browser_state() -> gr.BrowserState:
    """The component that keeps the session in this browser's localStorage."""
    return gr.BrowserState(
        None,
        storage_key=STORAGE_KEY,
        secret=os.environ.get("LACO_BROWSER_SECRET", DEFAULT_SECRET),
    )


def snapshot(session: Session) -> dict:
    """What the browser keeps (called after anything that changes the session)."""
    return session.to_dict()


def summary_md(session: Session) -> str:
    n = len(session.builds)
    what = f"**{n} model{'s' if n != 1 else ''}** in this session" if n else "No models built yet"
    back = f"↻ Restored {session.restored} from your last visit · " if session.restored else ""
    return f"<small>{back}{what} · base `{session.spec}` · kept in this browser across reloads.</small>"


def restore(stored, session: Session):
    """Page load: the session this browser kept, if any (a fresh session otherwise)."""
    if not isinstance(stored, dict) or stored.get("format") != SESSION_FORMAT or session.builds:
        return session, summary_md(session)
    restored = Session.from_dict(stored)
    restored.restored = len(restored.builds)
    return restored, summary_md(restored)


@user_errors
def download(session: Session) -> str:
    """The whole session as one JSON file (recipes, labels, metrics; no tensors, no token)."""
    if not session.builds:
        raise LacoError("Nothing to save yet: build a model first.")
    d = session.to_dict()
    d.pop("owner", None)  # a file travels; the owner token stays in this browser
    out = Path(tempfile.mkdtemp(prefix="laco-session-")) / "laco_session.json"
    out.write_text(json.dumps(d, indent=1), encoding="utf-8")
    return str(out)


@user_errors
def offer(session: Session):
    """The session file in its box, shown once there is one."""
    return gr.File(download(session), visible=True)


def _paths(files) -> list[Path]:
    if not files:
        return []
    items = files if isinstance(files, list) else [files]
    return [Path(getattr(f, "name", f)) for f in items]


@gpu
def load_files(engine: Engine, session: Session, files, progress: gr.Progress = PROGRESS):
    """Load our session JSON, a ``laco_recipe.json`` (with its ``laco_recipe.safetensors``) or
    a mergekit passthrough YAML. A session's builds join this one (rebuilt when used); a
    recipe is built now and selected."""
    paths = _paths(files)
    if not paths:
        raise LacoError(
            "Choose a file: a session (.json), a recipe (.json + .safetensors) or a mergekit YAML."
        )
    for p in paths:
        engine.limits.check("upload_bytes", p.stat().st_size, f"The upload {p.name}")
        if p.suffix.lower() not in RECIPE_SUFFIXES:
            raise LacoError(f"'{p.name}' is not a .json, .yaml or .safetensors file.")
    texts = [p for p in paths if p.suffix.lower() != ".safetensors"]
    if len(texts) != 1:
        raise LacoError("Give one .json or .yaml file (and at most the recipe's .safetensors).")
    main = texts[0]
    if main.suffix.lower() == ".json":
        try:
            d = json.loads(main.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            d = None  # the recipe reader says what is wrong with it
        if isinstance(d, dict) and d.get("format") == SESSION_FORMAT:
            schema.check_session(d, REGISTRY.steps, engine.limits)
            return _merge_session(engine, session, d)
    if main.suffix.lower() == ".json":
        with tempfile.TemporaryDirectory(prefix="laco-recipe-") as tmp:  # read, then removed
            folder = Path(tmp)
            shutil.copy(main, folder / RECIPE_FILE)
            for p in paths:
                if p.suffix.lower() == ".safetensors":
                    shutil.copy(p, folder / TENSORS_FILE)
            recipe = read_recipe(folder, engine.limits)
    else:
        recipe = read_recipe(main, engine.limits)
    progress(0.2, desc=f"Rebuilding {recipe.describe()}…")
    did = engine.add_recipe(recipe, session.token())
    try:
        engine.model(did, session.token())
    except BaseException:
        engine.forget(did, session.token())  # a refused or failed rebuild leaves no build
        raise
    entry = remember(engine, session, did)
    info = entry.info
    md = (
        f"### ✓ Loaded `{did}` — {schema.md_escape(recipe.describe())}  \n"
        f"{info.get('layers_before', '?')} → {info.get('layers_after', '?')} layers on "
        f"{schema.md_escape(recipe.base.spec)}; it is now selected in Compare, Evaluate and "
        "Export."
    )
    return session, md, summary_md(session)


@gpu
def api_load_recipe(engine: Engine, session: Session, files, progress: gr.Progress = PROGRESS):
    """``/load_recipe`` for scripts: a recipe (and its tensors) joins the session."""
    session, md, _ = load_files(engine, session, files, progress=progress)
    return session, md


def _merge_session(engine: Engine, session: Session, d: dict):
    # a build id of the file reaches only this session's own engine builds (the engine keys
    # builds by owner); any other is registered again from the file's recipe when first used
    other = Session.from_dict({**d, "owner": None})
    known = {b.id for b in session.builds}
    added = 0
    for b in other.builds:
        if b.id in known:
            continue
        engine.limits.check("builds", len(session.builds) + 1)
        session.builds.append(b)  # registered with the engine when first used
        added += 1
    if other.current and session.get(other.current):
        session.current = other.current
    session.baselines = session.baselines or other.baselines
    md = f"### ✓ Loaded a session: {added} model{'s' if added != 1 else ''} added (rebuilt when you use them)"
    if other.ui and other.spec == session.spec:  # its page (plan, method, tab…) on this model
        session.ui = {**session.ui, **other.ui}
        session.page_from_file = dict(other.ui)
        md += ", and its page: plan, method, map, tab and prompt"
    md += "."
    return session, md, summary_md(session)


def build(engine: Engine, session: gr.State) -> Workspace:
    """The "Your work" bar above the tabs: what the session holds, save, load, share."""
    browser = browser_state()
    summary = gr.Markdown(summary_md(Session()), elem_id="work-summary")
    with gr.Accordion("Your work: save, load, share", open=False, elem_id="work"):
        with gr.Row(elem_classes=["laco-row"]):
            with gr.Column():
                save_btn = gr.Button("⬇ Download session", size="sm", elem_id="work-download")
                saved = gr.File(label="Session file", interactive=False, height=80, visible=False)
            with gr.Column():
                files = gr.File(
                    label="Load a session or a recipe",
                    file_count="multiple",
                    file_types=sorted(RECIPE_SUFFIXES),
                    height=132,
                    elem_id="work-files",
                )
                gr.Markdown(
                    "<small>.json (session or recipe), laco_recipe.safetensors, mergekit "
                    ".yaml</small>"
                )
                load_btn = gr.Button("Load", size="sm", elem_id="load-recipe")
        loaded_md = gr.Markdown("", elem_id="load-result")
        gr.Markdown(
            "<small>To hand a plan or a result to a colleague, copy its link on the "
            "**Collapse** tab (under the plan, under a best collapse or a search), or send "
            "the session file or an exported `laco_recipe.json`.</small>"
        )

    save_btn.click(offer, session, saved, api_visibility="private")
    loaded = load_btn.click(
        partial(load_files, engine),
        [session, files],
        [session, loaded_md, summary],
        api_name="load_session",
        concurrency_id=LONG_GROUP,
    )
    # scripts: ``/load_recipe`` keeps its recipe-files-only signature
    recipe_files = api.hidden(gr.File, file_count="multiple", file_types=[".json", ".safetensors"])
    scripted = api.endpoint(
        partial(api_load_recipe, engine),
        [session, recipe_files],
        [session, api.hidden(gr.Markdown)],
        "load_recipe",
        concurrency_id=LONG_GROUP,
    )
    return Workspace(browser, summary, loaded, scripted)


def saved(session: Session) -> tuple[dict, str]:
    """After a change: what the browser keeps, and the summary line."""
    return snapshot(session), summary_md(session)


def restore_on_load(demo: gr.Blocks, work: Workspace, session: gr.State):
    """Page load restores the session this browser kept; returns the event (the model tab
    loads the session's base model after it)."""
    return demo.load(
        restore,
        [work.browser, session],
        [session, work.summary],
        api_visibility="private",
        queue=False,
    )


def keep_after(events: list[Event], work: Workspace, session: gr.State) -> None:
    """Every event in ``events`` (and a load from this panel) saves the session afterwards."""
    for ev in [*events, work.loaded, work.scripted]:
        ev.then(
            saved,
            session,
            [work.browser, work.summary],
            api_visibility="private",
            queue=False,
        )
