"""Configuration and result of an automatic collapse search."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from transformers import PreTrainedModel

from ..arch.adapters import get_layers
from ..arch.plan import Range
from ..arch.sharing import count_params
from ..errors import LacoError
from ..params import ParamDef

# what a search may stop at: sizes, then quality budgets (at most one of them is given)
TARGETS = ("target_layers", "target_ratio", "target_block_ratio", "max_ppl_ratio", "max_kl")

# the settings every strategy may read (``Strategy.uses`` names them); a strategy's own
# settings are its ``params``, kept in ``SearchConfig.strategy_params``
SEARCH_PARAMS = (
    ParamDef("merge_count", "int", 4, 2, 512, short="C", help="C: layers per merge at most"),
    ParamDef("low", "int", 1, 0, 4096, short="L", help="L: lowest layer a merge may start at"),
    ParamDef(
        "high", "int", None, 1, 4096, short="H", help="H: the scan starts at H − C (unset: last)"
    ),
    ParamDef(
        "threshold",
        "float",
        0.65,
        0.0,
        1.0,
        short="T",
        help="T: accept a merge while its score (in (0, 1]) stays above T",
    ),
)
# settings that change how fast a search runs, never what it decides
RUN_PARAMS = (
    ParamDef(
        "early_exit",
        "bool",
        True,
        help="stop scoring a candidate once its decision is certain (decisions unchanged)",
    ),
)
_DEFAULT = {d.name: d.default for d in (*SEARCH_PARAMS, *RUN_PARAMS)}
# settings of older recipes that are strategies' own now, with the strategies that read them
_MOVED = {
    "interval": ("paper",),
    "lazy": ("greedy", "evo"),
    "refine_top": ("greedy", "evo"),
    "generations": ("evo",),
    "population": ("evo",),
    "seed": ("evo",),
}


@dataclass
class SearchConfig:
    """Parameters of an automatic collapse search.

    Attributes:
        merge_count: C, layers merged per step (a range covers up to C layers).
        low: L, lowest layer a merge may start at (original index).
        high: H, the paper loop starts at H − C; None means the number of layers.
        threshold: T, accept a candidate when its score is above T (paper: 0.65 for 7B).
        method: Merge method name (``laco_core.registry``).
        objective: Objective name: ``cosine`` (paper), ``kl`` or ``ppl``; scores are in (0, 1].
        strategy: Strategy name: ``paper`` (Algorithm 1 scan), ``greedy`` (best range each
            step)…
        target_layers: Stop once this many layers are removed (instead of by T alone).
        target_ratio: Stop once this fraction of ALL parameters is removed (the papers'
            convention; on an embedding-heavy model it means many more layers).
        target_block_ratio: Stop once this fraction of the transformer layers' parameters
            (embedding and LM head excluded) is removed: the same depth on every model.
        max_ppl_ratio: A quality budget instead of a size: keep removing while the
            validation perplexity (after the refit, when there is one) stays within this
            many times the dense model's; the result is the last plan that did.
        max_kl: The same budget as a mean KL(dense ‖ model) in nats per token.
        method_params: Parameters of the method (declared by it; e.g. ``{"alpha": 0.3}``);
            for ``rdsc_calibrated`` without ``alpha``, α is chosen per merge.
        objective_params: Settings of the objective (declared by it; e.g. ``{"stride": 1}``
            for ``kl``).
        strategy_params: Settings of the strategy (declared by it in ``params``; e.g.
            ``{"interval": 2}`` for ``paper``, ``{"lazy": True}`` for ``greedy``).
        batch_size: Prompts packed per forward chunk; also the step of the early exit.
        early_exit: Paper strategy: stop scoring a candidate once the remaining chunks cannot
            change the decision (bounds declared by the objective). Decisions are unchanged;
            a candidate decided early logs the score over the prompts scored so far and
            ``prompts_scored``.
        workers: Candidates scored at once, each on one CPU thread (None: one per torch
            thread on CPU, one on GPU). Decisions do not depend on this number.
        refit: After the search, refit the found plan with this fitted method (e.g.
            ``drop_lsq``) on the refit text, from the dense model bottom-up.
        refit_params: Parameters of the refit method (e.g. ``{"ridge": 0.1}``).
        units: ``layers`` (merge ranges of whole layers) or ``blocks`` (a strategy whose
            ``units`` include it: also remove single layers' attention sub-blocks; the
            target counts parameters, and the result needs the shapes sidecar to be saved).
    """

    merge_count: int = _DEFAULT["merge_count"]
    low: int = _DEFAULT["low"]
    high: int | None = _DEFAULT["high"]
    threshold: float = _DEFAULT["threshold"]
    method: str = "official"
    objective: str = "cosine"
    strategy: str = "paper"
    target_layers: int | None = None
    target_ratio: float | None = None
    target_block_ratio: float | None = None
    max_ppl_ratio: float | None = None
    max_kl: float | None = None
    method_params: dict = field(default_factory=dict)
    strategy_params: dict = field(default_factory=dict)
    objective_params: dict = field(default_factory=dict)
    batch_size: int = 4
    early_exit: bool = _DEFAULT["early_exit"]
    workers: int | None = None
    refit: str | None = None
    refit_params: dict = field(default_factory=dict)
    units: str = "layers"

    def validate(self, num_layers: int) -> SearchConfig:
        """Check the numeric parameters against a model with ``num_layers`` layers.

        Names (method, objective, strategy) are checked where they are resolved.

        Raises:
            LacoError: with a message naming the parameter to fix.
        """
        if not 2 <= self.merge_count <= num_layers:
            raise LacoError(
                f"--merge-count must be between 2 and {num_layers} (the model's layers)."
            )
        high = num_layers if self.high is None else self.high
        if not 0 <= self.low < high <= num_layers:
            raise LacoError(
                f"Need 0 <= low < high <= {num_layers}; got low={self.low}, high={high}."
            )
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)):
            raise LacoError("--threshold must be a number between 0 and 1.")
        if not 0 <= self.threshold <= 1:
            raise LacoError(
                f"--threshold {self.threshold} is outside [0, 1]: every score lies in (0, 1]."
            )
        given = [k for k in TARGETS if getattr(self, k) is not None]
        if len(given) > 1:
            flags = " and ".join("--" + k.replace("_", "-") for k in given)
            raise LacoError(f"Give one target or budget, not {flags}.")
        for key in ("target_block_ratio", "max_ppl_ratio", "max_kl"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise LacoError(f"--{key.replace('_', '-')} must be a number.")
        if self.target_block_ratio is not None and not (
            math.isfinite(self.target_block_ratio) and 0 < self.target_block_ratio < 1
        ):
            raise LacoError(
                "--target-block-ratio is a fraction of the layers' parameters removed: use "
                "0 < R < 1, e.g. 0.2."
            )
        if self.max_ppl_ratio is not None and not (
            math.isfinite(self.max_ppl_ratio) and self.max_ppl_ratio > 1
        ):
            raise LacoError(
                "--max-ppl-ratio is a perplexity budget relative to the dense model: use a "
                "number above 1, e.g. 1.5."
            )
        if self.max_kl is not None and not (math.isfinite(self.max_kl) and self.max_kl > 0):
            raise LacoError(
                "--max-kl is a budget in nats per token: use a positive number, e.g. 0.5."
            )
        if self.target_ratio is not None and not (
            math.isfinite(self.target_ratio) and 0 < self.target_ratio < 1
        ):
            raise LacoError(
                "--target-ratio is a fraction of parameters removed: use 0 < R < 1, e.g. 0.2."
            )
        if self.target_layers is not None and not 0 < self.target_layers < num_layers:
            raise LacoError(f"--target-layers must be between 1 and {num_layers - 1}.")
        if self.workers is not None and self.workers < 1:
            raise LacoError("--workers must be at least 1.")
        if self.batch_size < 1:
            raise LacoError("--batch-size must be at least 1.")
        if self.units not in ("layers", "blocks"):
            raise LacoError(f"--units is 'layers' or 'blocks', not '{self.units}'.")
        if self.units == "blocks" and self.target_ratio is None:
            raise LacoError(
                "--units blocks (attention sub-blocks too) runs to a --target-ratio: the "
                "target counts parameters, not layers."
            )
        return self

    @property
    def budget(self) -> bool:
        """True when the search stops at a quality budget rather than a size."""
        return self.max_ppl_ratio is not None or self.max_kl is not None

    @property
    def sized(self) -> bool:
        """True when the search stops at a size (layers, block or all parameters)."""
        return any(getattr(self, k) is not None for k in TARGETS[:3])

    def to_dict(self) -> dict:
        """JSON-safe fields (method parameters that are tensors are left out)."""
        d = asdict(self)
        for key in ("method_params", "strategy_params", "objective_params", "refit_params"):
            d[key] = {
                k: v
                for k, v in getattr(self, key).items()
                if isinstance(v, (int, float, str, bool))
            }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        d = dict(d)
        moved = {k: d.pop(k) for k in list(d) if k in _MOVED}
        if moved and isinstance(d.get("strategy_params", {}), dict):
            # a recipe from before strategies declared their settings: keep what its
            # strategy read, drop what no strategy it names reads
            strategy = d.get("strategy", "paper")
            own = {k: v for k, v in moved.items() if strategy in _MOVED[k]}
            d["strategy_params"] = {**own, **d.get("strategy_params", {})}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LacoError(f"Unknown search setting(s) {', '.join(unknown)} in the recipe.")
        return cls(**d)


@dataclass
class Merge:
    """One accepted merge: lo..hi in the indices of the model at that step."""

    lo: int
    hi: int
    method: str
    params: dict
    score: float | None = None


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        model: The collapsed model (``laco_layer_map`` set).
        accepted: ``(lo, hi, score)`` of each accepted merge, in the indices of the model
            as the search saw it at that step.
        candidates: Every evaluated range: ``lo, hi, score, accepted`` (+ ``alpha`` when
            calibrated, ``orig`` = the range in original indices).
        plan: The result as ranges in ORIGINAL layer indices.
        seconds: Wall time of the search, activation cache included.
        objective: The objective the scores refer to.
        params_before: Parameters of the input model.
        params_after: Parameters of the result.
        merges: The merges that rebuild ``model`` from the input model, in order (after a
            refit, the refitted merges).
        config: The configuration used.
    """

    model: PreTrainedModel
    accepted: list[tuple[int, int, float]]
    candidates: list[dict]
    plan: list[Range]
    seconds: float
    objective: str
    params_before: int
    params_after: int
    merges: list[Merge] = field(default_factory=list)
    config: SearchConfig = field(default_factory=SearchConfig)
    curve: object | None = None  # a ``curve.QualityCurve`` when the search recorded one
    refitted: tuple | None = None  # (model, merges) of the kept plan's refit, when done already

    @property
    def layers_removed(self) -> int:
        return sum(hi - lo for lo, hi in self.plan)

    def log(self) -> dict:
        """The JSON log of ``laco auto --json``."""
        return {
            "accepted": [list(a) for a in self.accepted],
            "candidates": self.candidates,
            "plan": [list(r) for r in self.plan],
            "seconds": round(self.seconds, 3),
            "objective": self.objective,
            "method": self.config.method,
            "refit": self.config.refit,
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def layer_params(model: PreTrainedModel) -> int:
    """Parameters of one decoder layer (every layer of the supported models has the same size)."""
    return sum(p.numel() for p in get_layers(model)[0].parameters())


def block_params(model: PreTrainedModel) -> int:
    """Parameters of the transformer layers alone (embedding, final norm and LM head excluded)."""
    return sum(p.numel() for layer in get_layers(model) for p in layer.parameters())


def size_report(model: PreTrainedModel, dense: PreTrainedModel | None = None) -> dict:
    """A model's size three ways, and the share of its parameters outside the layers.

    With ``dense``, also each figure's share removed relative to it.
    """
    out = {
        "layers": len(get_layers(model)),
        "block_params": block_params(model),
        "params": count_params(model),
    }
    out["embedding_share"] = 1 - out["block_params"] / out["params"]
    if dense is not None:
        ref = size_report(dense)
        for k in ("layers", "block_params", "params"):
            out[f"{k}_removed"] = 1 - out[k] / ref[k]
    return out


def describe_size(report: dict) -> str:
    """``layers 30 -> 24 (-20.0 %), block parameters -20.0 %, all parameters -16.4 %`` style."""
    parts = [f"{report['layers_removed']:.1%} of the layers"]
    parts.append(f"{report['block_params_removed']:.1%} of the layer parameters")
    parts.append(f"{report['params_removed']:.1%} of all parameters")
    return (
        "removed " + ", ".join(parts) + f" (embedding and head: {report['embedding_share']:.0%} "
        "of what remains)"
    )


def target_layers_of(model: PreTrainedModel, cfg: SearchConfig) -> int | None:
    """Layers to remove for the config's size target, or None without one."""
    if cfg.target_layers is not None:
        return cfg.target_layers
    n = len(get_layers(model))
    if cfg.target_ratio is not None:
        share, of, flag = cfg.target_ratio, count_params(model), "--target-ratio"
        what = "of all parameters"
    elif cfg.target_block_ratio is not None:
        share, of, flag = cfg.target_block_ratio, block_params(model), "--target-block-ratio"
        what = "of the layers' parameters"
    else:
        return None
    need = math.ceil(share * of / layer_params(model) - 1e-9)
    if need >= n:
        raise LacoError(f"Removing {share:.0%} {what} needs {need} of {n} layers: lower {flag}.")
    return need
