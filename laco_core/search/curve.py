"""The size–quality curve of a greedy search, and the quality budget that stops it.

A greedy search walks a path of plans, one removal per step. After each step the monitor
scores the current model on a validation slice of the training texts (never the held-out
evaluation texts, never the search's or the refit's text): perplexity relative to the dense
model's and KL(dense ‖ model), before the refit and, where the search has a refit and a
quality budget decides, after it. The points make the curve a user reads before committing
to a size; a budget (``max_ppl_ratio`` / ``max_kl``) stops the walk at the last plan within it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from transformers import PreTrainedModel

from ..analysis.evaluate import reference_metrics
from ..arch.plan import plan_of
from ..arch.sharing import count_params
from ..assets import read_asset
from ..errors import LacoError
from ..recipe import TextSource
from .config import SearchConfig, block_params

# a build whose validation perplexity passes this many times the dense model's is called out
# on one loud line, in its card and in the app (a product rule, the same on every model)
CLIFF = 3.0
VALID_SEQ_LEN = 512  # a validation paragraph is scored whole (they are ~100-200 tokens)
VALID_ASSET = "valid_paragraphs"  # the bundled validation slice of the training texts


@dataclass
class CurvePoint:
    """One plan on the search's path: its size and its validation quality."""

    layers_removed: int
    plan: list[list[int]]
    params: int
    block_params: int
    ppl_ratio: float
    kl: float
    ppl_ratio_refit: float | None = None
    kl_refit: float | None = None

    @property
    def ratio(self) -> float:
        """The figure that counts: after the refit when there is one."""
        return self.ppl_ratio if self.ppl_ratio_refit is None else self.ppl_ratio_refit

    @property
    def divergence(self) -> float:
        return self.kl if self.kl_refit is None else self.kl_refit


@dataclass
class QualityCurve:
    """Validation quality along a search's path (``points[0]`` is one step in)."""

    text: str
    dense_ppl: float
    points: list[CurvePoint] = field(default_factory=list)
    max_ppl_ratio: float | None = None
    max_kl: float | None = None

    def knee(self) -> int | None:
        """Layers removed at the curve's knee: the point farthest below the chord from no
        removal (ratio 1) to the last point, on log perplexity ratios. None when the curve
        has fewer than three points or bends too little (< 10 % of its rise) to name one."""
        xs = [0] + [p.layers_removed for p in self.points]
        ys = [0.0] + [math.log(max(p.ratio, 1e-9)) for p in self.points]
        if len(xs) < 3 or ys[-1] <= ys[0] or xs[-1] == xs[0]:
            return None
        rise = ys[-1] - ys[0]
        gaps = [
            ys[0] + rise * (x - xs[0]) / (xs[-1] - xs[0]) - y for x, y in zip(xs, ys, strict=True)
        ]
        k = max(range(1, len(xs) - 1), key=lambda i: gaps[i])
        return xs[k] if gaps[k] > 0.1 * rise else None

    def within(self, p: CurvePoint) -> bool:
        if self.max_ppl_ratio is not None and p.ratio > self.max_ppl_ratio:
            return False
        return not (self.max_kl is not None and p.divergence > self.max_kl)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["knee"] = self.knee()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QualityCurve:
        d = {k: v for k, v in d.items() if k != "knee"}
        d["points"] = [CurvePoint(**p) for p in d.get("points", [])]
        return cls(**d)


def validation_source() -> TextSource:
    """The bundled validation slice, by reference (what curves and budgets are measured on)."""
    return TextSource.of(read_asset(VALID_ASSET), VALID_ASSET)


def measure(model: PreTrainedModel, dense: PreTrainedModel, tokenizer, texts: list[str]) -> dict:
    """``ppl_ratio`` (model ÷ dense), ``kl`` and ``dense_ppl`` on ``texts``, each scored whole."""
    m = reference_metrics(model, dense, tokenizer, texts, seq_len=VALID_SEQ_LEN)
    return {"ppl_ratio": m["ppl"] / m["ref_ppl"], "kl": m["kl"], "dense_ppl": m["ref_ppl"]}


def validation(model: PreTrainedModel, dense: PreTrainedModel, tokenizer) -> dict:
    """Any build's validation figures on the bundled validation slice, for the cliff guard
    and the card: :func:`measure` and the text's name."""
    return {"text": VALID_ASSET, **measure(model, dense, tokenizer, read_asset(VALID_ASSET))}


def cliff_line(ratio: float | None, what: str = "validation") -> str | None:
    """The one loud line for a build past ``CLIFF`` × dense perplexity (None below it)."""
    if ratio is None or ratio <= CLIFF:
        return None
    return (
        f"WARNING: this model's {what} perplexity is {ratio:.2f}x the dense model's (past "
        f"{CLIFF:g}x): it has lost most of what the dense model knew; remove fewer layers, "
        "heal it, or use --max-ppl-ratio."
    )


class Monitor:
    """Scores each plan of a walking search on the validation texts; enforces a budget.

    Args:
        dense: The dense model.
        tokenizer: Its tokenizer.
        texts: The validation paragraphs.
        cfg: The search configuration (its budget, if any).
        refit: ``plan -> (model, merges)``: the search's refit of a plan, or None. It runs
            at every step only under a budget (the decision is taken after the refit).
        label: What the texts are, for the curve.
    """

    def __init__(
        self,
        dense: PreTrainedModel,
        tokenizer,
        texts: list[str],
        cfg: SearchConfig,
        refit: Callable | None = None,
        label: str = "validation",
    ):
        self.dense, self.tokenizer, self.texts = dense, tokenizer, texts
        self.refit = refit if cfg.budget else None
        self.curve = QualityCurve(label, math.nan, [], cfg.max_ppl_ratio, cfg.max_kl)
        self.over = False
        self.kept: dict | None = None  # the last plan within the budget, and its refit

    def _score(self, model: PreTrainedModel) -> tuple[float, float]:
        v = measure(model, self.dense, self.tokenizer, self.texts)
        if math.isnan(self.curve.dense_ppl):
            self.curve.dense_ppl = v["dense_ppl"]
        return v["ppl_ratio"], v["kl"]

    def record(self, model: PreTrainedModel, state: dict) -> bool:
        """Score ``model`` (the search's current one); False once it breaks the budget.

        ``state``: what the search needs to come back to this plan (kept while within).
        """
        plan = plan_of(model)
        ratio, kl = self._score(model)
        point = CurvePoint(
            sum(hi - lo for lo, hi in plan),
            [list(r) for r in plan],
            count_params(model),
            block_params(model),
            ratio,
            kl,
        )
        refitted = None
        if self.refit is not None and plan:
            refitted = self.refit(plan)
            point.ppl_ratio_refit, point.kl_refit = self._score(refitted[0])
        self.curve.points.append(point)
        if not self.curve.within(point):
            self.over = True
            return False
        self.kept = {**state, "refitted": refitted, "point": point}
        return True

    def finish_refit(self, model: PreTrainedModel) -> CurvePoint | None:
        """Score the final (refitted) model into its point of the curve (a size target
        refits once, at the end); None when its plan is not on the curve."""
        plan = [list(r) for r in plan_of(model)]
        point = next((p for p in reversed(self.curve.points) if p.plan == plan), None)
        if point is not None and point.ppl_ratio_refit is None:
            point.ppl_ratio_refit, point.kl_refit = self._score(model)
        return point

    def over_budget_error(self) -> LacoError:
        p = self.curve.points[0]
        what = (
            f"validation perplexity {p.ratio:.2f}x dense > {self.curve.max_ppl_ratio:g}x"
            if self.curve.max_ppl_ratio is not None
            else f"KL {p.divergence:.3f} > {self.curve.max_kl:g} nats per token"
        )
        return LacoError(
            f"Even the least damaging removal of one layer breaks the quality budget ({what}); "
            "nothing was built: raise the budget."
        )


def card_lines(curve: dict) -> list[str]:
    """Markdown lines for a model card: the final plan's validation quality, the knee, and
    the loud line past ``CLIFF`` (``curve`` as a recipe stores it)."""
    c = QualityCurve.from_dict(curve)
    if not c.points:
        return []
    kept = [p for p in c.points if c.within(p)] if (c.max_kl or c.max_ppl_ratio) else c.points
    if not kept:
        return []
    last = kept[-1]
    after = "after the refit" if last.ppl_ratio_refit is not None else "as searched"
    out = [
        f"Validation perplexity ({c.text}, a slice of the training texts that nothing was "
        f"fitted on): {last.ratio:.2f}x the base model's ({c.dense_ppl:.2f}), {after}, "
        f"with {last.layers_removed} layers removed; KL {last.divergence:.3f} nats per token."
    ]
    if (knee := c.knee()) is not None and last.layers_removed > knee:
        out.append(
            f"The size–quality curve bends at {knee} layers removed; this model lies past it."
        )
    if c.max_ppl_ratio is not None:
        out.append(
            f"Chosen as the smallest plan within {c.max_ppl_ratio:g}x dense validation perplexity."
        )
    if (loud := cliff_line(last.ratio)) is not None:
        out.append(f"**{loud}**")
    return out


def validation_lines(v: dict) -> list[str]:
    """Card lines for a build measured once on the validation slice (:func:`validation`)."""
    out = [
        f"Validation perplexity ({v['text']}, a slice of the training texts that nothing was "
        f"fitted on): {v['ppl_ratio']:.2f}x the base model's ({v['dense_ppl']:.2f}); "
        f"KL {v['kl']:.3f} nats per token."
    ]
    if (loud := cliff_line(v["ppl_ratio"])) is not None:
        out.append(f"**{loud}**")
    return out
