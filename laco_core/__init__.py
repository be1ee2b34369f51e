"""LaCo Explorer engine: load, measure, collapse, search, prune, evaluate, generate, export.

This package never imports gradio; the app in ``components/`` sits on top of it.
``from laco_core import load_pruned`` loads a width-pruned export (per-layer sizes).
"""

from .prune.io import load_pruned
from .version import __version__

__all__ = ["__version__", "load_pruned"]
