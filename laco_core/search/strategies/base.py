"""The interface of a search strategy: it drives a ``Search`` until it stops."""

from __future__ import annotations

from typing import ClassVar

from ...params import ParamDef, defaults, validate


class Strategy:
    """Decides which ranges to try and which to accept.

    A strategy declares its own settings in ``params`` (the CLI's flags, the app's controls,
    the recipe and the docs follow from them) and reads them from ``search.settings``.

    Attributes:
        name: Registry name (``--strategy``).
        summary: One line for the UI and the docs.
        params: Settings of this strategy alone (``SearchConfig.strategy_params``).
        uses: The common ``SearchConfig`` settings it reads (``config.SEARCH_PARAMS`` names;
            the app hides the others).
        units: What it can remove: ``layers`` (ranges of whole layers), ``blocks`` (also
            single layers' attention sub-blocks).
        scans: T alone decides each candidate in one pass, so a run at T shows at once
            what T accepts (the app measures it beside T).
        walks_path: Each accepted step removes one more unit from the plan before it, so the
            plans form a path: the search can record its size–quality curve and stop at a
            quality budget (``max_ppl_ratio`` / ``max_kl``).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[ParamDef, ...]] = ()
    uses: ClassVar[tuple[str, ...]] = ()
    units: ClassVar[tuple[str, ...]] = ("layers",)
    scans: ClassVar[bool] = False
    walks_path: ClassVar[bool] = False

    def reads(self, target: bool) -> set[str]:
        """The common settings it reads, with (``target``) or without a size target."""
        return set(self.uses)

    def settings(self, given: dict | None) -> dict:
        """Its settings: the declared defaults updated with ``given`` (checked)."""
        return {**defaults(self.params), **validate(self.params, given, f"{self.name} strategy")}

    def supports(self, method) -> bool:
        """Whether this strategy can search with ``method`` (a ``MergeMethod``)."""
        return True

    def run(self, search) -> None:
        """Accept merges on ``search`` (a ``laco_core.search.state.Search``) until done."""
        raise NotImplementedError
