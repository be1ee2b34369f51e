"""Helpers for calling the tab handlers directly, outside a Gradio event."""

from __future__ import annotations

from pathlib import Path

from components import model_tab
from components.state import Session
from laco_core.runtime.engine import Engine
from tests.helpers import save_tiny


class NoProgress:
    """Stands in for gr.Progress outside an event."""

    def __call__(self, *args, **kwargs):
        return None


def tiny_session(folder: Path, arch: str = "llama", layers: int = 6):
    """A fresh engine and a session whose base is a tiny model of ``arch`` saved to ``folder``.

    Returns:
        (engine, session, the Model tab's info dict), as ``model_tab.load_model`` leaves them.
    """
    engine = Engine()
    path = save_tiny(folder, arch, layers)
    session, _, info = model_tab.load_model(
        engine, str(path), "float32", "cpu", Session(), progress=NoProgress()
    )
    return engine, session, info
