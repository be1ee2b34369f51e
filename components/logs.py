"""Quiet server logs: a user error is one line (``common.handler``); warnings raised inside
the libraries we use (not by our code) are filtered once, when the app starts."""

from __future__ import annotations

import logging
import os
import warnings

# libraries whose own deprecation notices and advisories a user of the app cannot act on
LIBRARIES = (
    "torch",
    "transformers",
    "accelerate",
    "huggingface_hub",
    "gradio",
    "gradio_client",
    "peft",
    "gguf",
    "lm_eval",
    "datasets",
    "evaluate",
    "plotly",
    "pandas",
)


def quiet() -> None:
    """Filter library warnings (FutureWarning, DeprecationWarning, UserWarning) by the module
    they are attributed to; ours (``laco_core``, ``components``) still show. Library loggers
    speak from WARNING up; the app's own logger (``laco.app``) logs one INFO line per user
    error."""
    pattern = "(" + "|".join(LIBRARIES) + r")(\.|$)"
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=pattern)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # tqdm bars of weight loading and GGUF conversion: one line per update in a log file
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a core dependency
        pass
    for name in ("transformers", "accelerate", "huggingface_hub", "lm_eval", "datasets", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    app = logging.getLogger("laco.app")
    if not app.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s laco %(levelname)s %(message)s"))
        app.addHandler(handler)
        app.setLevel(logging.INFO)
        app.propagate = False
