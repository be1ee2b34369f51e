"""Named pipelines: the steps behind one command or one click.

``best_collapse`` is what ``laco auto --target-ratio R`` (no other flag) and the app's "Best
collapse" button run: the best training-free pipeline this project has measured on held-out
text (see docs/findings.md). The expert flags stay available; they build their own
``SearchStep``.
"""

from __future__ import annotations

from .assets import read_asset
from .errors import LacoError
from .recipe import Step, TextSource
from .search.config import SearchConfig
from .search.curve import validation_source
from .steps.heal import default_heal
from .steps.search import SearchStep

# calibration of the default pipeline: the training text's paragraphs (more tokens than the
# prompts, and disjoint from the held-out evaluation texts)
SEARCH_TEXT = "train_paragraphs"
SEARCH_TEXTS = 16  # the search scores the first 16 paragraphs
# the refit's least squares are data-limited: it fits on both training texts (9.2 k tokens;
# 2.15x -> 2.03x held-out perplexity at 20 % against the training text alone, see docs/findings.md)
REFIT_TEXT = "fit_paragraphs"


def refit_source() -> TextSource:
    """The text the best pipeline's fitted corrections learn from, by reference."""
    return TextSource.of(read_asset(REFIT_TEXT), REFIT_TEXT)


def best_collapse(
    target_ratio: float | None = None,
    target_layers: int | None = None,
    target_block_ratio: float | None = None,
    max_ppl_ratio: float | None = None,
    max_kl: float | None = None,
    heal_seconds: float | None = None,
) -> list[Step]:
    """The default automatic collapse to a target size or within a quality budget.

    A greedy search of plain layer drops scored by KL to the dense model (ranges of up to two
    layers, lazily re-scored), then each kept layer's MLP down projection refitted by ridge
    least squares on both bundled training texts (``drop_lsq``). Each step of the walk is
    scored on the training texts' validation slice (the size–quality curve); a budget keeps
    the last plan whose refitted model stays within it. The result is an ordinary checkpoint
    (whole layers removed, kept weights changed). With ``heal_seconds``, the default heal
    follows (``steps.heal.default_heal``: distilled from the dense model on the training text
    and its own samples, validation stop) within that budget.

    Raises:
        LacoError: without exactly one target or budget.
    """
    given = [target_ratio, target_layers, target_block_ratio, max_ppl_ratio, max_kl]
    if sum(v is not None for v in given) != 1:
        raise LacoError(
            "Give one target: a number of layers, a share of the layers' parameters or of all "
            "parameters, or a quality budget."
        )
    cfg = SearchConfig(
        strategy="greedy",
        objective="kl",
        method="drop",
        merge_count=2,
        strategy_params={"lazy": True},
        batch_size=2,
        target_ratio=target_ratio,
        target_layers=target_layers,
        target_block_ratio=target_block_ratio,
        max_ppl_ratio=max_ppl_ratio,
        max_kl=max_kl,
        refit="drop_lsq",
    )
    texts = read_asset(SEARCH_TEXT)
    search = TextSource.of(texts[:SEARCH_TEXTS], SEARCH_TEXT, SEARCH_TEXTS)
    healing = [default_heal(heal_seconds)] if heal_seconds is not None else []
    return [SearchStep(cfg, search, refit_source(), validation_source()), *healing]


PRESETS = {"best": best_collapse}
