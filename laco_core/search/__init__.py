"""Automatic collapse: LaCo Algorithm 1 made exact and fast, plus target-driven searches.

``run_search`` is the fast search, ``reference_search`` the literal official loop kept to
check it, ``preview`` the what-if estimate for a proposed plan.
"""

from __future__ import annotations

from ..engine import REBUILDERS
from .activations import ActivationCache
from .core import SearchConfig, SearchResult, replay, run_search, target_layers_of
from .objectives import OBJECTIVES
from .preview import PreviewCache, preview
from .reference import reference_search


def _rebuild_auto(engine, base, recipe: dict):
    """Replay the accepted merges of an ``auto`` recipe (exact for every method)."""
    from ..merge import build_collapsed

    with engine.lock:
        if recipe.get("steps"):
            return replay(base.model, recipe["steps"], recipe["method"])
        if not recipe.get("ranges"):  # nothing was accepted: the base model itself
            return base.model
        return build_collapsed(
            base.model,
            [tuple(r) for r in recipe["ranges"]],
            recipe["method"],
            **recipe.get("method_params", {}),
        )


# nested merges of rdsc/average/calibrated are not one merge of the original ranges
REBUILDERS["auto"] = _rebuild_auto

__all__ = [
    "OBJECTIVES",
    "ActivationCache",
    "PreviewCache",
    "SearchConfig",
    "SearchResult",
    "preview",
    "reference_search",
    "replay",
    "run_search",
    "target_layers_of",
]
