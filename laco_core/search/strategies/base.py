"""The interface of a search strategy: it drives a ``Search`` until it stops."""

from __future__ import annotations

from typing import ClassVar


class Strategy:
    """Decides which ranges to try and which to accept.

    Attributes:
        name: Registry name (``--strategy``).
        summary: One line for the UI.
        uses: The ``SearchConfig`` fields this strategy reads (the app hides the others).
        walks_path: Each accepted step removes one more unit from the plan before it, so the
            plans form a path: the search can record its size–quality curve and stop at a
            quality budget (``max_ppl_ratio`` / ``max_kl``).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    uses: ClassVar[tuple[str, ...]] = ()
    walks_path: ClassVar[bool] = False

    def supports(self, method) -> bool:
        """Whether this strategy can search with ``method`` (a ``MergeMethod``)."""
        return True

    def run(self, search) -> None:
        """Accept merges on ``search`` (a ``laco_core.search.state.Search``) until done."""
        raise NotImplementedError
