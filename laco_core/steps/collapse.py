"""Step kind ``collapse``: merge fixed layer ranges with a merge method."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..arch.adapters import get_layers
from ..arch.plan import format_plan, validate_ranges
from ..assets import read_asset
from ..errors import Cancelled
from ..methods.collapse import collapse_model
from ..recipe import Step, TextSource
from ..search.config import Merge
from ..search.run import complete, fit_plan, replay

# fitted methods are fitted on more tokens than the prompts: the training text's paragraphs
DEFAULT_FIT_TEXT = "train_paragraphs"


@dataclass
class CollapseStep(Step):
    """Merge ``ranges`` (the input model's indices) with ``method``.

    A fitted method (``drop_lsq``…) is fitted range by range, bottom-up, on ``calibration``
    (default: the bundled training text's paragraphs); ``merges`` then records each range's
    fitted parameters, tensors included, so the step replays exactly.
    """

    kind = "collapse"
    summary = "Merge fixed ranges of layers into one layer each."
    nested = {"calibration": TextSource, "merges": Merge}

    ranges: list[list[int]] = field(default_factory=list)
    method: str = "official"
    params: dict = field(default_factory=dict)
    calibration: TextSource | None = None
    merges: list[Merge] | None = None

    def describe(self) -> str:
        return f"collapse {format_plan(self.ranges)} ({self.method})"

    def apply(self, model, ctx):
        method = ctx.registry.method(self.method)
        params = method.check(self.params)
        ranges = validate_ranges([tuple(r) for r in self.ranges], len(get_layers(model)))
        if not method.fitted:
            return collapse_model(model, ranges, method, params), self
        if self.merges is not None and complete(self.merges, ctx.registry.method):
            return replay(model, self.merges, ctx.registry.method), self
        cal = self.calibration or TextSource.of(read_asset(DEFAULT_FIT_TEXT), DEFAULT_FIT_TEXT)
        _check_stop(ctx)
        ctx.report(0.1, f"Fitting {self.method} on {len(cal.resolve())} calibration texts…")
        texts = cal.resolve()
        cache = ctx.activations(model, texts)
        new, merges = fit_plan(model, ctx.tokenizer, texts, ranges, method, params, cache)
        _check_stop(ctx)  # a fit is not interruptible: a Stop during it discards its result
        return new, replace(self, calibration=cal, merges=merges)


def _check_stop(ctx) -> None:
    if ctx.stop is not None and ctx.stop.is_set():
        raise Cancelled("The collapse was cancelled.")
