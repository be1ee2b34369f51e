"""LaCo Algorithm 1 (Yang et al. 2024), made fast, plus target-driven and greedy searches.

A candidate is its merged layer (``build_layer``, sharing untouched tensors) followed by the
current model's layers above the range, scored from cached activations by running only those
layers. Only accepted merges become whole models (``build_collapsed``). The top-down scan
speculates: while candidate l is scored, the candidates l−1, l−2… that Algorithm 1 visits next
if l is rejected are scored on other CPU cores; an acceptance discards them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from ..adapters import final_norm, get_layers
from ..errors import LacoError
from ..merge import build_collapsed, build_layer, get_method, layer_map, plan_of
from ..models import count_params
from .activations import ActivationCache, layer_types, run_layers
from .correction import fit_block
from .objectives import OBJECTIVES, chunk_kl, nll_value, prompt_cosines, score
from .parallel import default_workers, worker_pool

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
        batch_size: Prompts packed per forward chunk; also the step of the early exit.
        early_exit: Paper strategy (cosine or KL objective): stop scoring a candidate once
            the remaining chunks cannot change the decision (every cosine lies in [−1, 1],
            every KL is ≥ 0). Decisions are unchanged; a candidate decided early logs the
            score over the prompts scored so far and ``prompts_scored``. Chunks are scored
            in the order of their damage under the first candidate, worst first.
        workers: Candidates scored at once, each on one CPU thread (None: one per torch
            thread on CPU, one on GPU). The scan speculates on rejections and the greedy
            step scores ranges side by side; decisions do not depend on this number.
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
    batch_size: int = 4
    early_exit: bool = True
    workers: int | None = None

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
        if self.workers is not None and self.workers < 1:
            raise LacoError("--workers must be at least 1.")
        if self.batch_size < 1:
            raise LacoError("--batch-size must be at least 1.")
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


class _Cancelled(Exception):
    """A speculative evaluation stopped because an earlier candidate was accepted."""


class _Lazy:
    """A future that runs its call when asked for the result (one worker: no speculation)."""

    def __init__(self, fn: Callable, *args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)


def workers_for(model: PreTrainedModel, cfg: SearchConfig) -> int:
    """Candidates scored at once: the config's number, else one per CPU thread."""
    return cfg.workers if cfg.workers is not None else default_workers(model)


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
        self.calibrate = cfg.method == CALIBRATED and "alpha" not in cfg.method_params
        self.workers = workers_for(model, cfg)
        self.pool: ThreadPoolExecutor | None = None
        self.cancel = threading.Event()
        # chunk order of the early exit (worst first), fixed by the first candidate scored
        self.order: list[int] | None = None

    # ---- evaluation ----------------------------------------------------------------------
    def n(self) -> int:
        return len(get_layers(self.cur))

    def inputs_at(self, start: int) -> list[list[torch.Tensor]]:
        """Per-chunk inputs of the current model's layers, valid at least up to ``start``.

        Only the main thread extends them: it asks for every index a worker will read
        before handing the worker its candidate.
        """
        layers = get_layers(self.cur)
        types = layer_types(self.cur)
        for k, c in enumerate(self.cache.chunks):
            ins = self.inputs[k]
            while len(ins) <= start:
                j = len(ins) - 1
                ins.append(run_layers([layers[j]], [types[j]], ins[j], c.kwargs))
        return self.inputs

    def prepare(self) -> None:
        """Fill the dense caches every objective reads, before workers share them."""
        if self.cfg.objective == "kl":
            for c in self.cache.chunks:
                self.cache.dense_logp(c)
        elif self.cfg.objective == "ppl" and self.cache.dense_nll is None:
            self.cache.dense_nll = nll_value(self.cache, self.dense, None)

    def build(self, lo: int, hi: int, params: dict) -> PreTrainedModel:
        """The whole collapsed model of an accepted merge."""
        if hi == lo:  # the official loop's merge of zero extra layers leaves the model as is
            return self.cur
        return build_collapsed(self.cur, [(lo, hi)], self.cfg.method, **params)

    def suffix(self, lo: int, hi: int, params: dict) -> tuple[list[nn.Module], list[str]]:
        """A candidate's layers from lo on: the merged layer, then the current ones above hi."""
        layers, types = get_layers(self.cur), layer_types(self.cur)
        if hi == lo:
            return list(layers[lo:]), types[lo:]
        merged = build_layer(self.cur, lo, hi, self.cfg.method, **params)
        return [merged, *layers[hi + 1 :]], [types[lo], *types[hi + 1 :]]

    def final(self, suffix: tuple[list[nn.Module], list[str]], lo: int, k: int) -> torch.Tensor:
        """Final state (after the final norm) of a candidate on chunk k.  # (1, T, H)"""
        c = self.cache.chunks[k]
        h = self.inputs[k][lo]
        for layer, t in zip(*suffix, strict=True):
            if self.cancel.is_set():  # per layer: a discarded speculation frees its core at once
                raise _Cancelled
            h = run_layers([layer], [t], h, c.kwargs)
        with torch.inference_mode():
            return final_norm(self.dense)(h)

    def evaluate(
        self, lo: int, hi: int, params: dict, threshold: float | None = None
    ) -> tuple[float, int | None]:
        """Score of merging lo..hi with ``params``, and the prompts scored if it exited early."""
        if (
            self.cfg.correct
            and self.cfg.method == CALIBRATED
            and hi > lo
            and "down_scale" not in params
        ):
            scale = self.fit_down_scale(lo, hi, params)
            if scale is not None:
                params["down_scale"] = scale
        method = get_method(self.cfg.method)
        if hi > lo and "fit" not in params and method.fitted:  # least squares (correction.py)
            params["fit"] = fit_block(self, lo, hi, params, method.fit_basis)
        suffix = self.suffix(lo, hi, params)
        early = (
            threshold is not None
            and self.cfg.early_exit
            and self.cfg.objective in ("cosine", "kl")
            and self.order is not None
        )
        if early:
            return self.score_early(suffix, lo, threshold)
        finals = [self.final(suffix, lo, k) for k in range(len(self.cache.chunks))]
        return score(self.cfg.objective, self.cache, self.dense, finals), None

    def score_early(
        self, suffix: tuple[list[nn.Module], list[str]], lo: int, threshold: float
    ) -> tuple[float, int | None]:
        """Score chunk by chunk, stopping once the rest cannot flip ``score > threshold``.

        Cosine: every prompt's cosine lies in [−1, 1]. KL: every token's KL is ≥ 0, so the
        score exp(−mean KL) can only fall (early rejections only).
        """
        total_prompts, total_tokens = self.cache.num_prompts, self.cache.num_tokens
        sims: list[float] = []
        kl_sum, tokens, prompts = 0.0, 0, 0
        for k in self.order or []:
            c = self.cache.chunks[k]
            h = self.final(suffix, lo, k)
            prompts += len(c.lengths)
            if self.cfg.objective == "cosine":
                sims.extend(prompt_cosines(c, h))
                rest, s = total_prompts - prompts, sum(sims)
                if rest and (
                    (s + rest) / total_prompts <= threshold
                    or (s - rest) / total_prompts > threshold
                ):
                    return s / prompts, prompts
            else:
                part, n = chunk_kl(self.cache, self.dense, c, h)
                kl_sum, tokens = kl_sum + part, tokens + n
                if tokens < total_tokens and math.exp(-kl_sum / total_tokens) <= threshold:
                    return math.exp(-kl_sum / tokens), prompts
        if self.cfg.objective == "cosine":
            return sum(sims) / total_prompts, None
        return math.exp(-kl_sum / total_tokens), None

    def set_order(self, lo: int, hi: int, params: dict) -> float | None:
        """Order chunks by their damage under one candidate, worst first (for early exits).

        The chunks are scored side by side on the workers. Returns the candidate's full
        score when ``params`` are all it is evaluated with (no α search, no fitted map or
        scale), so the scan does not score its first candidate twice; None otherwise.
        """
        suffix = self.suffix(lo, hi, params)
        self.inputs_at(hi)
        futs = [self.submit(self.final, suffix, lo, k) for k in range(len(self.cache.chunks))]
        finals = [f.result() for f in futs]
        damage = []
        for c, h in zip(self.cache.chunks, finals, strict=True):
            if self.cfg.objective == "cosine":
                damage.append(sum(1 - x for x in prompt_cosines(c, h)))
            else:
                damage.append(chunk_kl(self.cache, self.dense, c, h)[0])
        self.order = sorted(range(len(damage)), key=lambda k: -damage[k])
        if self.calibrate or self.cfg.correct or get_method(self.cfg.method).fitted:
            return None
        return score(self.cfg.objective, self.cache, self.dense, finals)

    @torch.inference_mode()
    def fit_down_scale(self, lo: int, hi: int, params: dict) -> list[float] | None:
        """Least-squares per-channel scale s of the merged MLP output (rows of down_proj).

        With x the input of layer lo, D the update layers lo..hi of the current model add
        to x, and A, F the merged layer's attention and MLP updates (A + F its total),
        s_c = Σ (D − A)_c F_c / Σ F_c² over real calibration tokens.
        """
        layer = build_layer(self.cur, lo, hi, self.cfg.method, **params)
        if any("post_feedforward" in n for n, _ in layer.named_parameters()):
            return None  # a norm after the MLP makes the scale non-linear in s
        mlp = getattr(layer, "mlp", None)
        if mlp is None:
            return None
        inputs = self.inputs_at(hi)
        cur_layers, types = get_layers(self.cur), layer_types(self.cur)
        num = den = None
        grabbed: list[torch.Tensor] = []
        for k, c in enumerate(self.cache.chunks):
            x = inputs[k][lo]  # (1, T, H)
            target = run_layers([cur_layers[hi]], [types[hi]], inputs[k][hi], c.kwargs)  # (1, T, H)
            grabbed.clear()
            handle = mlp.register_forward_hook(lambda m, a, out: grabbed.append(out))
            try:
                y = run_layers([layer], [types[lo]], x, c.kwargs)  # (1, T, H)
            finally:
                handle.remove()
            f = grabbed[0][c.mask].double()  # (N, H) MLP update of every token
            rest = (target - y)[c.mask].double() + f  # D − A  (N, H)
            n_, d_ = (rest * f).sum(0), (f * f).sum(0)
            num = n_ if num is None else num + n_
            den = d_ if den is None else den + d_
        scale = (num / den.clamp_min(1e-12)).clamp(0.0, 4.0)
        return [round(float(v), 6) for v in scale]

    def evaluate_best(
        self, lo: int, hi: int, calibrate: bool | None = None, threshold: float | None = None
    ) -> tuple[float, dict, int | None]:
        """Score a range; with a calibrated method, choose α by golden-section search.

        Returns:
            The score, the method parameters it was obtained with, and the prompts scored
            when an early exit decided it (None when every prompt was scored).
        """
        base = dict(self.cfg.method_params)
        if not (self.calibrate if calibrate is None else calibrate) or hi == lo:
            if self.cfg.method == CALIBRATED and "alpha" not in base:
                base["alpha"] = 0.0
            s, scored = self.evaluate(lo, hi, base, threshold)
            return s, base, scored
        seen: dict[float, tuple[float, dict]] = {}

        def f(a: float) -> float:
            a = round(a, 4)
            if a not in seen:
                p = {**base, "alpha": a}
                seen[a] = (self.evaluate(lo, hi, p)[0], p)
            return seen[a][0]

        golden_section_max(f, 0.0, 1.0, self.cfg.alpha_evals)
        f(0.0)  # drop is always a candidate: calibration never does worse than it
        a = max(seen, key=lambda x: seen[x][0])
        return seen[a][0], seen[a][1], None

    def submit(self, fn: Callable, *args) -> Future | _Lazy:
        return _Lazy(fn, *args) if self.pool is None else self.pool.submit(fn, *args)

    def drain(self, pending: deque) -> None:
        """Stop and forget speculative evaluations (an earlier candidate was accepted)."""
        self.cancel.set()
        for *_, fut in pending:
            if isinstance(fut, Future) and not fut.cancel():
                try:
                    fut.result()
                except _Cancelled:
                    pass
        pending.clear()
        self.cancel.clear()

    def log(
        self,
        lo: int,
        hi: int,
        s: float,
        accepted: bool,
        params: dict,
        threshold: float | None,
        scored: int | None = None,
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
        if scored is not None:
            event["prompts_scored"] = scored
        self.candidates.append(event)
        if self.callback is not None:
            self.callback(dict(event))

    def accept(self, lo: int, hi: int, s: float, params: dict) -> None:
        self.accepted.append((lo, hi, s))
        self.steps.append({"lo": lo, "hi": hi, "score": s, "params": dict(params)})
        self.removed += hi - lo
        self.cur = self.build(lo, hi, params)
        for ins in self.inputs:  # layers above lo changed; their inputs are recomputed on demand
            del ins[lo + 1 :]

    def done(self) -> bool:
        return self.need is not None and self.removed >= self.need

    def cap(self, lo: int, hi: int) -> int:
        """Shorten a range so a target is met exactly, never overshot."""
        return hi if self.need is None else min(hi, lo + self.need - self.removed)

    # ---- strategies ------------------------------------------------------------------------
    def run(self) -> None:
        self.prepare()
        with worker_pool(self.workers) as pool:
            self.pool = pool
            try:
                self.paper() if self.cfg.strategy == "paper" else self.greedy()
            finally:
                self.pool = None

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
        """One top-down scan. Candidates below the current one are scored ahead on the other
        workers as if everything were rejected; decisions are taken in scan order only."""
        c, interval = self.cfg.merge_count, self.cfg.interval
        lm = layer_map(self.cur)
        high = sum(1 for r in lm if r[0] < self.high)  # H in the current model's indices
        low = sum(1 for r in lm if r[1] < self.cfg.low)  # L likewise (identity on the first pass)
        lay = high - c
        pending: deque = deque()  # (lo, hi, future) in scan order
        nxt = lay

        def fill() -> None:
            nonlocal nxt
            # twice the workers in flight, so a worker done early picks up the next at once
            ahead = 1 if self.pool is None else 2 * self.workers
            while len(pending) < ahead and nxt >= low:
                hi = self.cap(nxt, min(nxt + c - 1, self.n() - 1))
                self.inputs_at(hi)  # every input a worker reads exists before it starts
                pending.append((nxt, hi, self.submit(self.evaluate_best, nxt, hi, None, threshold)))
                nxt -= 1

        try:
            while lay >= low and not self.done():
                if self.order is None and self.cfg.early_exit:
                    hi = self.cap(lay, min(lay + c - 1, self.n() - 1))
                    params = self.base_params()
                    first = self.set_order(lay, hi, params)
                    if first is not None and not pending and nxt == lay:
                        pending.append((lay, hi, _Lazy(lambda r=(first, params, None): r)))
                        nxt -= 1
                fill()
                lo, hi, fut = pending.popleft()
                s, params, scored = fut.result()
                ok = s > threshold
                self.log(lo, hi, s, ok, params, threshold, scored)
                if ok:
                    self.drain(pending)
                    self.accept(lo, hi, s, params)
                    lay -= interval
                    if lay >= self.n():
                        lay = self.n() - 1 - c
                    nxt = lay
                else:
                    lay -= 1
        finally:
            self.drain(pending)

    def base_params(self) -> dict:
        p = dict(self.cfg.method_params)
        if self.cfg.method == CALIBRATED and "alpha" not in p:
            p["alpha"] = 0.0
        return p

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
            self.inputs_at(max(hi for _, hi in ranges))
            scored = []
            # scored in waves of ``workers``; results are consumed in order, so the lazy stop
            # falls where it would with one worker
            for start in range(0, len(ranges), self.workers):
                wave = ranges[start : start + self.workers]
                futs = [self.submit(self.evaluate_best, lo, hi, False) for lo, hi in wave]
                stop = False
                for (lo, hi), fut in zip(wave, futs, strict=True):
                    if (
                        self.cfg.lazy
                        and scored
                        and min(x[0] for x in scored) <= stale.get(key((lo, hi)), float("-inf"))
                    ):
                        stop = True  # damage only grows as the model shrinks: the rest cannot win
                        break
                    s, params, _ = fut.result()
                    scored.append(((1 - s) / (hi - lo), lo, hi, s, params))
                    stale[key((lo, hi))] = scored[-1][0]
                if stop:
                    for f in futs:  # let the wave finish before the model can change
                        f.result()
                    break
            scored.sort(key=lambda x: x[0])
            if self.calibrate:  # re-score the most promising ranges with a calibrated α
                top = scored[: self.cfg.refine_top]
                futs = [self.submit(self.evaluate_best, lo, hi, True) for _, lo, hi, _, _ in top]
                refined = []
                for (_, lo, hi, _, _), fut in zip(top, futs, strict=True):
                    s, params, _ = fut.result()
                    refined.append(((1 - s) / (hi - lo), lo, hi, s, params))
                scored = sorted(refined, key=lambda x: x[0]) + scored[self.cfg.refine_top :]
            _, lo, hi, s, params = scored[0]
            ok = self.need is not None or s > self.cfg.threshold
            for _, lo2, hi2, s2, p2 in scored:
                self.log(lo2, hi2, s2, ok and (lo2, hi2) == (lo, hi), p2, None)
            if not ok:
                return
            self.accept(lo, hi, s, params)


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
        cache = ActivationCache(
            model, tokenizer, prompts, batch_size=cfg.batch_size, workers=workers_for(model, cfg)
        )
    state = _Search(model, cache, cfg, callback)
    state.run()
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
