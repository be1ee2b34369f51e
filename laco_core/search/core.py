"""LaCo Algorithm 1 (Yang et al. 2024), made fast, plus target-driven and greedy searches.

Every candidate is a real collapsed model built by ``build_collapsed`` (sharing untouched
tensors), scored from cached activations by running only its layers from the merge point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedModel

from ..adapters import get_layers
from ..errors import LacoError
from ..merge import build_collapsed, get_method, layer_map, plan_of
from ..models import count_params
from .activations import ActivationCache, run_layers, suffix_final
from .objectives import OBJECTIVES, prompt_cosines, score

Callback = Callable[[dict], None]
STRATEGIES = ("paper", "greedy")
CALIBRATED = "rdsc_calibrated"
# threshold decrement between passes of the paper loop when a target is not reached yet
PASS_STEP = 0.05


@dataclass
class SearchConfig:
    """Parameters of an automatic collapse search.

    Attributes:
        merge_count: C, layers merged per step (a range covers up to C layers).
        low: L, lowest layer a merge may start at (original index).
        high: H, the loop starts at H − C; None means the number of layers.
        interval: I, how far the loop jumps down after an accepted merge.
        threshold: T, accept a candidate when its score is above T (paper: 0.65 for 7B).
        method: Merge method name in ``methods.REGISTRY``.
        objective: ``cosine`` (paper), ``kl`` or ``ppl``; every score is in (0, 1].
        strategy: ``paper`` (Algorithm 1 top-down scan) or ``greedy`` (best range each step).
        target_layers: Stop once this many layers are removed (instead of by T alone).
        target_ratio: Stop once this fraction of the parameters is removed.
        method_params: Fixed parameters of the method (e.g. ``{"alpha": 0.3}``); for
            ``rdsc_calibrated`` without ``alpha``, α is chosen per merge on the prompts.
        alpha_evals: Objective evaluations of the golden-section search for α.
        refine_top: Greedy with a calibrated method: ranges re-scored with a calibrated α.
        correct: With ``rdsc_calibrated``: also fit, in closed form on the calibration
            activations, a per-channel scale of the merged layer's MLP output projection so
            that its residual update matches that of the layers it replaces (stored in the
            recipe as ``down_scale``; skipped for layers with a post-MLP norm).
        lazy: Greedy: re-score ranges in order of their damage at earlier steps and stop a
            step once no stale damage can beat the best fresh one (assumes damage only grows
            as layers go; far fewer forwards, usually the same choices).
        batch_size: Prompts per padded forward chunk (prompts are sorted by length first, so
            small chunks waste little on padding).
        early_exit: Paper strategy with the cosine objective: stop scoring a candidate once
            the remaining prompts cannot change the decision (every cosine lies in [−1, 1]).
            Decisions are unchanged; a candidate decided early logs the mean over the
            prompts scored so far and ``prompts_scored``.
    """

    merge_count: int = 4
    low: int = 1
    high: int | None = None
    interval: int = 2
    threshold: float = 0.65
    method: str = "official"
    objective: str = "cosine"
    strategy: str = "paper"
    target_layers: int | None = None
    target_ratio: float | None = None
    method_params: dict = field(default_factory=dict)
    alpha_evals: int = 6
    refine_top: int = 3
    correct: bool = False
    lazy: bool = False
    batch_size: int = 8
    early_exit: bool = False

    def validate(self, num_layers: int) -> SearchConfig:
        """Check the parameters against a model with ``num_layers`` layers.

        Raises:
            LacoError: with a message naming the parameter to fix.
        """
        if self.merge_count < 2:
            raise LacoError("--merge-count must be at least 2 (a merge needs two layers).")
        high = num_layers if self.high is None else self.high
        if not 0 <= self.low < high <= num_layers:
            raise LacoError(
                f"Need 0 <= low < high <= {num_layers}; got low={self.low}, high={high}."
            )
        if self.interval < 1:
            raise LacoError("--interval must be at least 1.")
        if self.objective not in OBJECTIVES:
            raise LacoError(
                f"Unknown objective '{self.objective}'; choose one of: {', '.join(OBJECTIVES)}."
            )
        if self.strategy not in STRATEGIES:
            raise LacoError(
                f"Unknown strategy '{self.strategy}'; choose one of: {', '.join(STRATEGIES)}."
            )
        if self.target_layers is not None and self.target_ratio is not None:
            raise LacoError("Give either --target-layers or --target-ratio, not both.")
        if self.target_ratio is not None and not 0 < self.target_ratio < 1:
            raise LacoError(
                "--target-ratio is a fraction of parameters removed: use 0 < R < 1, e.g. 0.2."
            )
        if self.target_layers is not None and not 0 < self.target_layers < num_layers:
            raise LacoError(f"--target-layers must be between 1 and {num_layers - 1}.")
        get_method(self.method)
        return self


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        model: The collapsed model (built with ``build_collapsed``, ``laco_layer_map`` set).
        accepted: ``(lo, hi, score)`` of each accepted merge, in the indices of the model
            as the search saw it at that step.
        candidates: Every evaluated range: ``lo, hi, score, accepted`` (+ ``alpha`` when
            calibrated, ``orig`` = the range in original indices).
        plan: The result as ranges in ORIGINAL layer indices.
        seconds: Wall time of the search, activation cache included.
        objective: The objective the scores refer to.
        params_before: Parameters of the input model.
        params_after: Parameters of the result.
        steps: Accepted merges with their method parameters, replayable in order.
        config: The configuration used.
    """

    model: PreTrainedModel
    accepted: list[tuple[int, int, float]]
    candidates: list[dict]
    plan: list[tuple[int, int]]
    seconds: float
    objective: str
    params_before: int
    params_after: int
    steps: list[dict] = field(default_factory=list)
    config: SearchConfig = field(default_factory=SearchConfig)

    @property
    def layers_removed(self) -> int:
        return sum(hi - lo for lo, hi in self.plan)

    def recipe(self) -> dict:
        """A recipe that rebuilds this model from its base (``kind`` ``auto``).

        ``ranges`` (original indices) rebuild it exactly for ``official`` and ``drop``;
        ``steps`` replays the accepted merges in order, which is exact for every method.
        """
        return {
            "kind": "auto",
            "method": self.config.method,
            "method_params": dict(self.config.method_params),
            "ranges": [list(r) for r in self.plan],
            "steps": [dict(s) for s in self.steps],
            "config": asdict(self.config),
            "objective": self.objective,
            "accepted": [list(a) for a in self.accepted],
            "layers_before": len(self.plan_layers_before()),
            "layers_after": len(get_layers(self.model)),
            "params_before": self.params_before,
            "params_after": self.params_after,
        }

    def plan_layers_before(self) -> list[int]:
        return list(range(layer_map(self.model)[-1][1] + 1))

    def log(self) -> dict:
        """The JSON log of ``laco auto --json``."""
        return {
            "accepted": [list(a) for a in self.accepted],
            "candidates": self.candidates,
            "plan": [list(r) for r in self.plan],
            "seconds": round(self.seconds, 3),
            "objective": self.objective,
            "method": self.config.method,
            "steps": self.steps,
            "params_before": self.params_before,
            "params_after": self.params_after,
        }


def replay(model: PreTrainedModel, steps: list[dict], method: str) -> PreTrainedModel:
    """Apply accepted merges in order (each step's ``lo``/``hi`` in the then-current indices)."""
    cur = model
    for s in steps:
        if s["hi"] > s["lo"]:
            cur = build_collapsed(
                cur, [(s["lo"], s["hi"])], s.get("method", method), **s.get("params", {})
            )
    return cur


def layer_params(model: PreTrainedModel) -> int:
    """Parameters of one decoder layer (every layer of the supported models has the same size)."""
    return sum(p.numel() for p in get_layers(model)[0].parameters())


def target_layers_of(model: PreTrainedModel, cfg: SearchConfig) -> int | None:
    """Layers to remove for the config's target, or None without a target."""
    if cfg.target_layers is not None:
        return cfg.target_layers
    if cfg.target_ratio is None:
        return None
    need = math.ceil(cfg.target_ratio * count_params(model) / layer_params(model) - 1e-9)
    n = len(get_layers(model))
    if need >= n:
        raise LacoError(
            f"Removing {cfg.target_ratio:.0%} of the parameters needs {need} of {n} layers: lower --target-ratio."
        )
    return need


class _Search:
    """State of one search: the current model, its layer inputs, the log."""

    def __init__(
        self,
        model: PreTrainedModel,
        cache: ActivationCache,
        cfg: SearchConfig,
        callback: Callback | None,
    ):
        self.dense = model
        self.cache = cache
        self.cfg = cfg
        self.callback = callback
        self.cur = model
        # per chunk, inputs of the current model's layers; valid up to len() - 1
        self.inputs = [list(c.inputs) for c in cache.chunks]
        self.accepted: list[tuple[int, int, float]] = []
        self.candidates: list[dict] = []
        self.steps: list[dict] = []
        self.need = target_layers_of(model, cfg)
        self.removed = 0
        self.high = len(get_layers(model)) if cfg.high is None else cfg.high
        self.scored: int | None = None  # prompts scored by the last early-exit evaluation
        self.calibrate = cfg.method == CALIBRATED and "alpha" not in cfg.method_params

    # ---- evaluation ----------------------------------------------------------------------
    def n(self) -> int:
        return len(get_layers(self.cur))

    def inputs_at(self, start: int) -> list[list[torch.Tensor]]:
        """Per-chunk inputs of the current model's layers, valid at least up to ``start``."""
        layers = get_layers(self.cur)
        types = _types(self.cur)
        for k, c in enumerate(self.cache.chunks):
            ins = self.inputs[k]
            while len(ins) <= start:
                j = len(ins) - 1
                ins.append(run_layers([layers[j]], [types[j]], ins[j], c.kwargs))
        return self.inputs

    def build(self, lo: int, hi: int, params: dict) -> PreTrainedModel:
        if hi == lo:  # the official loop's merge of zero extra layers leaves the model as is
            return self.cur
        return build_collapsed(self.cur, [(lo, hi)], self.cfg.method, **params)

    def evaluate(
        self, lo: int, hi: int, params: dict, threshold: float | None = None
    ) -> tuple[PreTrainedModel, float]:
        if (
            self.cfg.correct
            and self.cfg.method == CALIBRATED
            and hi > lo
            and "down_scale" not in params
        ):
            scale = self.fit_down_scale(lo, hi, params)
            if scale is not None:
                params["down_scale"] = scale
        cand = self.build(lo, hi, params)
        inputs = self.inputs_at(lo)
        if threshold is not None and self.cfg.early_exit and self.cfg.objective == "cosine":
            return cand, self.cosine_early(cand, lo, inputs, threshold)
        finals = [
            suffix_final(cand, lo, inputs[k][lo], c.kwargs) for k, c in enumerate(self.cache.chunks)
        ]
        return cand, score(self.cfg.objective, self.cache, cand, finals)

    @torch.inference_mode()
    def fit_down_scale(self, lo: int, hi: int, params: dict) -> list[float] | None:
        """Least-squares per-channel scale s of the merged MLP output (rows of down_proj).

        With x the input of layer lo, D the update layers lo..hi of the current model add
        to x, and A, F the merged layer's attention and MLP updates (A + F its total),
        s_c = Σ (D − A)_c F_c / Σ F_c² over real calibration tokens.
        """
        cand = self.build(lo, hi, params)
        layer = get_layers(cand)[lo]
        if any("post_feedforward" in n for n, _ in layer.named_parameters()):
            return None  # a norm after the MLP makes the scale non-linear in s
        mlp = getattr(layer, "mlp", None)
        if mlp is None:
            return None
        inputs = self.inputs_at(hi)
        cur_layers, types = get_layers(self.cur), _types(self.cur)
        cand_type = _types(cand)[lo]
        num = den = None
        grabbed: list[torch.Tensor] = []
        for k, c in enumerate(self.cache.chunks):
            x = inputs[k][lo]  # (B, T, H)
            target = run_layers([cur_layers[hi]], [types[hi]], inputs[k][hi], c.kwargs)  # (B, T, H)
            grabbed.clear()
            handle = mlp.register_forward_hook(lambda m, a, out: grabbed.append(out))
            try:
                y = run_layers([layer], [cand_type], x, c.kwargs)  # (B, T, H)
            finally:
                handle.remove()
            f = grabbed[0][c.mask].double()  # (N, H) MLP update of real tokens
            rest = (target - y)[c.mask].double() + f  # D − A  (N, H)
            n_, d_ = (rest * f).sum(0), (f * f).sum(0)
            num = n_ if num is None else num + n_
            den = d_ if den is None else den + d_
        scale = (num / den.clamp_min(1e-12)).clamp(0.0, 4.0)
        return [round(float(v), 6) for v in scale]

    def cosine_early(self, cand: PreTrainedModel, lo: int, inputs, threshold: float) -> float:
        """Mean cosine over prompts, stopping once the rest cannot flip ``score > threshold``."""
        total = self.cache.num_prompts
        sims: list[float] = []
        for k, c in enumerate(self.cache.chunks):
            sims.extend(prompt_cosines(c, suffix_final(cand, lo, inputs[k][lo], c.kwargs)))
            rest, s = total - len(sims), sum(sims)
            if rest and ((s + rest) / total <= threshold or (s - rest) / total > threshold):
                self.scored = len(sims)
                return s / len(sims)
        self.scored = total
        return sum(sims) / total

    def evaluate_best(
        self, lo: int, hi: int, calibrate: bool | None = None, threshold: float | None = None
    ) -> tuple[PreTrainedModel, float, dict]:
        """Score a range; with a calibrated method, choose α by golden-section search."""
        base = dict(self.cfg.method_params)
        if not (self.calibrate if calibrate is None else calibrate) or hi == lo:
            if self.cfg.method == CALIBRATED and "alpha" not in base:
                base["alpha"] = 0.0
            cand, s = self.evaluate(lo, hi, base, threshold)
            return cand, s, base
        seen: dict[float, tuple[PreTrainedModel, float, dict]] = {}

        def f(a: float) -> float:
            a = round(a, 4)
            if a not in seen:
                p = {**base, "alpha": a}
                cand, s = self.evaluate(lo, hi, p)
                seen[a] = (cand, s, p)
            return seen[a][1]

        golden_section_max(f, 0.0, 1.0, self.cfg.alpha_evals)
        f(0.0)  # drop is always a candidate: calibration never does worse than it
        a = max(seen, key=lambda x: seen[x][1])
        return seen[a]

    def log(
        self, lo: int, hi: int, s: float, accepted: bool, params: dict, threshold: float | None
    ) -> None:
        lm = layer_map(self.cur)
        event = {
            "lo": lo,
            "hi": hi,
            "score": s,
            "accepted": accepted,
            "orig": [lm[lo][0], lm[hi][1]],
            "layers": self.n(),
        }
        if threshold is not None:
            event["threshold"] = threshold
        if "alpha" in params:
            event["alpha"] = params["alpha"]
        if self.scored is not None and self.scored < self.cache.num_prompts:
            event["prompts_scored"] = self.scored
        self.candidates.append(event)
        if self.callback is not None:
            self.callback(dict(event))

    def accept(self, lo: int, hi: int, s: float, cand: PreTrainedModel, params: dict) -> None:
        self.accepted.append((lo, hi, s))
        self.steps.append({"lo": lo, "hi": hi, "score": s, "params": dict(params)})
        self.removed += hi - lo
        self.cur = cand
        for ins in self.inputs:  # layers above lo changed; their inputs are recomputed on demand
            del ins[lo + 1 :]

    def done(self) -> bool:
        return self.need is not None and self.removed >= self.need

    def cap(self, lo: int, hi: int) -> int:
        """Shorten a range so a target is met exactly, never overshot."""
        return hi if self.need is None else min(hi, lo + self.need - self.removed)

    # ---- strategies ------------------------------------------------------------------------
    def paper(self) -> None:
        """Algorithm 1; with a target, further top-down passes with a lower threshold."""
        threshold = self.cfg.threshold
        while True:
            self.paper_pass(threshold)
            if self.need is None or self.done():
                return
            if threshold <= 0:
                raise LacoError(
                    f"Could not remove {self.need} layers within layers {self.cfg.low}-{self.high - 1}: "
                    "widen --low/--high or lower the target."
                )
            threshold = max(threshold - PASS_STEP, 0.0)

    def paper_pass(self, threshold: float) -> None:
        c, low, interval = self.cfg.merge_count, self.cfg.low, self.cfg.interval
        lm = layer_map(self.cur)
        high = sum(1 for r in lm if r[0] < self.high)  # H in the current model's indices
        low = sum(1 for r in lm if r[1] < low)  # L likewise (identity on the first pass)
        lay = high - c
        while lay >= low and not self.done():
            hi = self.cap(lay, min(lay + c - 1, self.n() - 1))
            self.scored = None
            cand, s, params = self.evaluate_best(lay, hi, threshold=threshold)
            ok = s > threshold
            self.log(lay, hi, s, ok, params, threshold)
            if ok:
                self.accept(lay, hi, s, cand, params)
                lay -= interval
                if lay >= self.n():
                    lay = self.n() - 1 - c
            else:
                lay -= 1

    def greedy(self) -> None:
        """Each step: score every admissible range of 2..C layers, take the least damage
        (1 − score) per removed layer; stop at the target (or, without one, when the best
        score is ≤ T). With ``lazy``, ranges are re-scored in order of their last known
        damage and the step stops once the best fresh damage beats every stale one."""
        c = self.cfg.merge_count
        stale: dict[tuple[int, int], float] = {}  # original span -> last known damage
        while not self.done():
            lm, n = layer_map(self.cur), self.n()
            ranges = []
            for lo in range(n):
                for hi in range(lo + 1, min(lo + c, n)):
                    if lm[lo][0] < self.cfg.low or lm[hi][1] >= self.high:
                        continue
                    if self.need is not None and hi - lo > self.need - self.removed:
                        continue
                    ranges.append((lo, hi))
            if not ranges:
                if self.need is not None:
                    raise LacoError(
                        f"Could not remove {self.need} layers within layers {self.cfg.low}-{self.high - 1}: "
                        "widen --low/--high or lower the target."
                    )
                return

            def key(r: tuple[int, int], lm: list = lm) -> tuple[int, int]:
                return lm[r[0]][0], lm[r[1]][1]

            if self.cfg.lazy:
                ranges.sort(key=lambda r: stale.get(key(r), float("-inf")))
            scored = []
            for lo, hi in ranges:
                if (
                    self.cfg.lazy
                    and scored
                    and min(x[0] for x in scored) <= stale.get(key((lo, hi)), float("-inf"))
                ):
                    break  # damage only grows as the model shrinks: the rest cannot win
                _, s, params = self.evaluate_best(lo, hi, calibrate=False)
                scored.append(((1 - s) / (hi - lo), lo, hi, s, params))
                stale[key((lo, hi))] = scored[-1][0]
            scored.sort(key=lambda x: x[0])
            if self.calibrate:  # re-score the most promising ranges with a calibrated α
                refined = []
                for _, lo, hi, _, _ in scored[: self.cfg.refine_top]:
                    _, s, params = self.evaluate_best(lo, hi, calibrate=True)
                    refined.append(((1 - s) / (hi - lo), lo, hi, s, params))
                scored = sorted(refined, key=lambda x: x[0]) + scored[self.cfg.refine_top :]
            _, lo, hi, s, params = scored[0]
            ok = self.need is not None or s > self.cfg.threshold
            for _, lo2, hi2, s2, p2 in scored:
                self.log(lo2, hi2, s2, ok and (lo2, hi2) == (lo, hi), p2, None)
            if not ok:
                return
            # candidates are not kept (each may hold new tensors): rebuild the winner
            self.accept(lo, hi, s, self.build(lo, hi, params), params)


def golden_section_max(f: Callable[[float], float], a: float, b: float, evals: int) -> float:
    """Maximise a unimodal ``f`` on [a, b] with ``evals`` evaluations; returns the best x."""
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(max(evals - 2, 0)):
        if f1 >= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = f(x2)
    return x1 if f1 >= f2 else x2


def _types(model: PreTrainedModel) -> list[str]:
    from .activations import layer_types

    return layer_types(model)


def run_search(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    cfg: SearchConfig | None = None,
    callback: Callback | None = None,
    cache: ActivationCache | None = None,
) -> SearchResult:
    """Search for a collapse plan of ``model`` on calibration ``prompts``.

    With ``strategy="paper"`` and no target this is LaCo Algorithm 1 (Yang et al. 2024)
    exactly as the official code runs it: l = H − C; while l ≥ L merge l..min(l+C−1, last)
    of the current model, accept if score > T (then l −= I, and l = count − 1 − C if l is
    past the last layer), else l −= 1; scores always against the dense model.

    Args:
        model: The dense model (left unchanged; the result shares its untouched tensors).
        tokenizer: Its tokenizer.
        prompts: Calibration prompts, each tokenized alone with ``tokenizer(prompt)``.
        cfg: Search parameters (default: the paper's C=4, L=1, H=all, I=2, T=0.65).
        callback: Called with a dict after every evaluated candidate; raise to cancel.
        cache: Activations of ``model`` on ``prompts`` (an ``ActivationCache``) to reuse.

    Returns:
        A SearchResult with the collapsed model, the decision log and the plan.

    Raises:
        LacoError: for invalid parameters or an unreachable target.
    """
    cfg = (cfg or SearchConfig()).validate(len(get_layers(model)))
    t0 = time.perf_counter()
    if cache is None:
        cache = ActivationCache(model, tokenizer, prompts, batch_size=cfg.batch_size)
    state = _Search(model, cache, cfg, callback)
    if cfg.strategy == "paper":
        state.paper()
    else:
        state.greedy()
    result = state.cur
    if result is model:  # nothing accepted: still hand back a distinct model object
        result = build_collapsed_identity(model)
    return SearchResult(
        model=result,
        accepted=state.accepted,
        candidates=state.candidates,
        plan=plan_of(result),
        seconds=time.perf_counter() - t0,
        objective=cfg.objective,
        params_before=count_params(model),
        params_after=count_params(result),
        steps=state.steps,
        config=cfg,
    )


def build_collapsed_identity(model: PreTrainedModel) -> PreTrainedModel:
    """The model itself when no merge was accepted (there is nothing to build)."""
    if not hasattr(model, "laco_layer_map"):
        model.laco_layer_map = layer_map(model)
    return model
