"""LaCo Explorer engine: load, measure, collapse, search, prune, evaluate, generate, export.

This package never imports gradio; the app in ``components/`` sits on top of it.
"""

__version__ = "0.1.0"
