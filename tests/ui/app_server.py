"""Start the real app on 127.0.0.1 for gradio_client and browser tests (and the app benches)."""

from __future__ import annotations

import socket

from laco_core.runtime.engine import Engine

# Debian Chromium, headless in a container: no sandbox, GPU or background traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(engine: Engine | None = None, preload: bool = True):
    """The app as ``python app.py`` serves it, in this process.

    Args:
        engine: The engine to serve (default: a fresh one, as app.py makes).
        preload: Load the default model and its analysis first, as app.py does; tests on
            tiny models skip it and load their own model through ``/load_model``.
    """
    import app

    engine = engine or Engine()
    if preload:
        engine.load("default")
        app.similarity_tab.precompute(engine)
    demo = app.configure(app.build_app(engine))
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **app.launch_kwargs(engine),
    )
    return demo, f"http://127.0.0.1:{port}/", engine
