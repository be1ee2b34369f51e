"""Automatic collapse: LaCo Algorithm 1 made exact and fast, plus target-driven strategies.

``run.run`` runs a search with resolved components (``laco_core.ops.run_search`` takes
names), ``reference.reference_search`` is the literal official loop kept to check it, and
``preview.preview`` the what-if estimate for a proposed plan.
"""

from .config import Merge, SearchConfig, SearchResult, target_layers_of

__all__ = ["Merge", "SearchConfig", "SearchResult", "target_layers_of"]
