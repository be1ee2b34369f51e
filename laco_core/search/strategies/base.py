"""The interface of a search strategy: it drives a ``Search`` until it stops."""

from __future__ import annotations

from typing import ClassVar


class Strategy:
    """Decides which ranges to try and which to accept.

    Attributes:
        name: Registry name (``--strategy``).
        summary: One line for the UI.
        uses: The ``SearchConfig`` fields this strategy reads (the app hides the others).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    uses: ClassVar[tuple[str, ...]] = ()

    def supports(self, method) -> bool:
        """Whether this strategy can search with ``method`` (a ``MergeMethod``)."""
        return True

    def run(self, search) -> None:
        """Accept merges on ``search`` (a ``laco_core.search.state.Search``) until done."""
        raise NotImplementedError
