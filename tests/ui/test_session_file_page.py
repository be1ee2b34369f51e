"""A loaded session file brings back its page (the unbuilt plan, the method and its parameters,
the map, the tab, the prompt) as a reload does, on the same base model only, and once."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from components import method_picker, page_memory, session_panel
from components.state import Session
from tests.ui.helpers import NoProgress, tiny_session


def _kept(spec: str) -> Session:
    """A session whose page holds a half-made plan (nothing built)."""
    s = Session(spec=spec, num_layers=6)
    values = [""] * len(method_picker.PARAM_NAMES)
    values[method_picker.PARAM_NAMES.index("alpha")] = "0.3"
    s, _ = page_memory.keep_page(s, "2-4", "1", "rdsc_calibrated", "parameters", "Hi", *values)
    s, _ = page_memory.keep_tab("evaluate", s)
    return s


def _file(session: Session, folder: Path) -> str:
    path = folder / "session.json"
    path.write_text(json.dumps(session.to_dict()), encoding="utf-8")
    return str(path)


def test_a_session_file_puts_its_page_back(tmp_path):
    engine, session, _ = tiny_session(tmp_path / "llama")
    path = _file(_kept(session.spec), tmp_path)
    # nothing waits before a load: the page stays as it is
    untouched = page_memory.from_file(session)
    assert all(isinstance(u, type(gr.skip())) for u in untouched[1:])

    session, md, _ = session_panel.load_files(engine, session, [path], progress=NoProgress())
    assert "0 models added" in md and "its page: plan, method, map, tab and prompt" in md
    out = page_memory.from_file(session)
    assert out[1:6] == ("2-4", "1", "rdsc_calibrated", "parameters", "Hi")
    assert "session file you loaded" in out[6] and out[7].selected == "evaluate"
    assert out[8 + method_picker.PARAM_NAMES.index("alpha")]["value"] == "0.3"
    # once: the next load of something else leaves the page alone
    again = page_memory.from_file(out[0])
    assert all(isinstance(u, type(gr.skip())) for u in again[1:])
    # and the page is now this session's, kept in the browser with it
    assert session_panel.snapshot(session)["ui"]["plan"] == "2-4"


def test_a_session_file_of_another_model_leaves_the_page_alone(tmp_path):
    engine, session, _ = tiny_session(tmp_path / "llama")
    path = _file(_kept("gemma3-270m"), tmp_path)  # its plan is in another model's layers
    session, md, _ = session_panel.load_files(engine, session, [path], progress=NoProgress())
    assert "its page" not in md and session.ui == {}
    assert all(isinstance(u, type(gr.skip())) for u in page_memory.from_file(session)[1:])


def test_a_page_change_between_the_load_and_its_put_back_does_not_replace_the_file_page(tmp_path):
    # the browser still shows the old plan: a change event it sends while the load runs
    # writes that page into the session before the file's page is put back
    engine, session, _ = tiny_session(tmp_path / "llama")
    path = _file(_kept(session.spec), tmp_path)
    session, _, _ = session_panel.load_files(engine, session, [path], progress=NoProgress())
    blank = [""] * len(method_picker.PARAM_NAMES)
    session, _ = page_memory.keep_page(session, "5-5", "", "drop", "cosine", "old", *blank)
    out = page_memory.from_file(session)
    assert out[1:6] == ("2-4", "1", "rdsc_calibrated", "parameters", "Hi")
    assert session.ui["plan"] == "2-4" and session.ui["method"] == "rdsc_calibrated"
