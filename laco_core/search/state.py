"""The state of one search: current model, its cached layer inputs, candidates, the log.

A candidate is its merged layer (sharing untouched tensors) followed by the current model's
layers above the range, scored from cached activations by running only those layers. Every
candidate goes through the method's ``fit`` hook before it is built, whatever the strategy.
Strategies speculate: candidates are scored ahead on other CPU cores and discarded when an
earlier decision makes them moot (``submit``/``drain``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn
from transformers import PreTrainedModel

from ..analysis.activations import ActivationCache, layer_types, run_layers
from ..analysis.parallel import default_workers
from ..arch.adapters import final_norm, get_layers
from ..arch.plan import layer_map
from ..arch.sharing import count_params
from ..arch.subblocks import (
    ATTENTION,
    attention_params,
    drop_attention,
    without_attention,
)
from ..errors import Cancelled
from ..methods.collapse import collapse_model, merged_layer
from ..methods.fitting import FitContext
from .config import Merge, SearchConfig, layer_params, target_layers_of
from .objectives import Objective, Partial
from .speculation import Lazy, Speculation

Callback = Callable[[dict], None]


def workers_for(model: PreTrainedModel, cfg: SearchConfig) -> int:
    """Candidates scored at once: the config's number, else one per CPU thread."""
    return cfg.workers if cfg.workers is not None else default_workers(model)


class Search(FitContext):
    """One running search; strategies drive it, methods fit through it (a ``FitContext``).

    Args:
        model: The dense model (never modified).
        cache: Its activations on the calibration prompts.
        cfg: The configuration.
        method, objective: Resolved components.
        callback: Called with a dict per logged candidate.
        stop: Set from another thread to cancel the search (raises ``Cancelled``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        cache: ActivationCache,
        cfg: SearchConfig,
        method,
        objective: Objective,
        callback: Callback | None = None,
        stop: threading.Event | None = None,
    ):
        self.dense = model
        self.cache = cache
        self.cfg = cfg
        self.method = method
        self.objective = objective
        self.params = method.check(cfg.method_params)
        self.callback = callback
        self.stop = stop or threading.Event()
        self.cur = model
        # per chunk, inputs of the current model's layers; valid up to len() - 1
        self.inputs = [list(c.inputs) for c in cache.chunks]
        self.accepted: list[tuple[int, int, float]] = []
        self.candidates: list[dict] = []
        self.merges: list[Merge] = []
        self.need = target_layers_of(model, cfg)
        self.removed = 0
        # sub-block search: units are ranges and single attention blocks, the target counts
        # parameters (layers have different sizes once attentions go)
        self.blocks = cfg.units == "blocks"
        self.params_before = count_params(model)
        self.layer_size = layer_params(model)
        self.need_params = (
            None if cfg.target_ratio is None else cfg.target_ratio * self.params_before
        )
        self.high = len(get_layers(model)) if cfg.high is None else cfg.high
        self.workers = workers_for(model, cfg)
        self.pool: ThreadPoolExecutor | None = None
        self.cancel = threading.Event()
        # chunk order of the early exit (worst first), fixed by the first candidate scored
        self.order: list[int] | None = None
        self.memo: dict[tuple, float] = {}  # scores a fit already computed (see ``score``)
        self.monitor = None  # a ``curve.Monitor`` scoring each accepted plan (and a budget)
        self.settings: dict = {}  # the strategy's own settings (``Strategy.settings``)

    # ---- the current model -----------------------------------------------------------------
    def n(self) -> int:
        return len(get_layers(self.cur))

    def dense_layers(self) -> list[nn.Module]:
        return list(get_layers(self.dense))

    def dense_types(self) -> list[str]:
        return layer_types(self.dense)

    def restart(self) -> None:
        """Back to the dense model (a strategy that replaces what it accepted so far)."""
        self.cur = self.dense
        self.inputs = [list(c.inputs) for c in self.cache.chunks]
        self.accepted, self.merges, self.removed = [], [], 0
        self.memo.clear()

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
        """Fill the dense caches the objective reads, before workers share them."""
        self.objective.prepare(self.cache, self.dense)

    # ---- candidates --------------------------------------------------------------------------
    def fitted(self, lo: int, hi: int, params: dict) -> dict:
        """``params`` after the method's fit hook (the only way a candidate is parameterised)."""
        return params if hi == lo else self.method.fit(self, lo, hi, dict(params))

    def suffix(
        self, lo: int, hi: int, params: dict, attention: bool = False
    ) -> tuple[list[nn.Module], list[str]]:
        """A candidate's layers from lo on: the merged layer (or layer lo without its
        attention), then the current ones above hi."""
        layers, types = get_layers(self.cur), layer_types(self.cur)
        if attention:
            return [without_attention(self.cur, lo), *layers[lo + 1 :]], types[lo:]
        if hi == lo:
            return list(layers[lo:]), types[lo:]
        merged = merged_layer(self.cur, lo, hi, self.method, params)
        return [merged, *layers[hi + 1 :]], [types[lo], *types[hi + 1 :]]

    def final(self, suffix: tuple[list[nn.Module], list[str]], lo: int, k: int) -> torch.Tensor:
        """Final state (after the final norm) of a candidate on chunk k.  # (1, T, H)"""
        return self.final_from(suffix, self.inputs[k][lo], k)

    def final_from(
        self, suffix: tuple[list[nn.Module], list[str]], h: torch.Tensor, k: int
    ) -> torch.Tensor:
        """Final state of running ``suffix`` from hidden state ``h`` on chunk k.  # (1, T, H)"""
        c = self.cache.chunks[k]
        for layer, t in zip(*suffix, strict=True):
            if self.cancel.is_set():  # per layer: a discarded speculation frees its core at once
                raise Speculation
            if self.stop.is_set():
                raise Cancelled("The search was cancelled.")
            h = run_layers([layer], [t], h, c.kwargs)
        with torch.inference_mode():
            return final_norm(self.dense)(h)

    def can_score(self) -> bool:
        return True

    def score(self, lo: int, hi: int, params: dict) -> tuple[float, dict]:
        """Objective of merging lo..hi with ``params`` (fitted first), and the params used.

        Remembered until the model changes, so a fit that scored its own choice (α of
        ``rdsc_calibrated``) does not make ``evaluate`` score it again.
        """
        params = self.fitted(lo, hi, params)
        suffix = self.suffix(lo, hi, params)
        finals = [self.final(suffix, lo, k) for k in range(len(self.cache.chunks))]
        value = self.objective.score(self.cache, self.dense, finals)
        self.memo[self._key(lo, hi, params)] = value
        return value, params

    def _key(self, lo: int, hi: int, params: dict) -> tuple:
        plain = sorted((k, repr(v)) for k, v in params.items() if isinstance(v, (int, float, str)))
        return len(self.merges), lo, hi, tuple(plain)

    def evaluate(
        self,
        lo: int,
        hi: int,
        params: dict,
        threshold: float | None = None,
        ceiling: Callable[[], float] | None = None,
        attention: bool = False,
    ) -> tuple[float, dict, int | None]:
        """Score a range with its fitted parameters.

        Args:
            threshold: The paper scan's T: scoring stops once ``score > T`` is decided.
            ceiling: A greedy step's best damage per removed layer so far (read live):
                scoring stops once this range cannot beat it; the score returned is then the
                highest the range could still reach (so its damage is a lower bound).
            attention: Score removing layer lo's attention instead of merging lo..hi.

        Returns:
            The score, the parameters it was obtained with, and the prompts scored when it
            was decided early (None when every prompt was scored).
        """
        params = {} if attention else self.fitted(lo, hi, params)
        known = None if attention else self.memo.get(self._key(lo, hi, params))
        if known is not None:
            return known, params, None
        suffix = self.suffix(lo, hi, params, attention)
        early = threshold is not None and self.cfg.early_exit
        if self.order is not None and (early or (ceiling is not None and self.cfg.early_exit)):
            width = self.unit_size(lo, hi, attention)
            s, scored = self.score_early(suffix, lo, threshold if early else None, ceiling, width)
            return s, params, scored
        finals = [self.final(suffix, lo, k) for k in range(len(self.cache.chunks))]
        return self.objective.score(self.cache, self.dense, finals), params, None

    def score_early(
        self,
        suffix: tuple[list[nn.Module], list[str]],
        lo: int,
        threshold: float | None,
        ceiling: Callable[[], float] | None = None,
        width: float = 1.0,
    ) -> tuple[float, int | None]:
        """Score chunk by chunk (worst first), stopping once the objective's bounds decide
        ``score > threshold``, or show the range cannot beat the ``ceiling`` damage."""
        p = Partial()
        expected = self.objective.expected(self.cache)
        for k in self.order or []:
            c = self.cache.chunks[k]
            p.add(*self.objective.stat(self.cache, self.dense, c, self.final(suffix, lo, k)), 0)
            p.prompts += len(c.lengths)
            if p.count >= expected:
                break
            if threshold is not None and self.objective.early(self.cache, p, threshold):
                return self.objective.value(self.cache, p), p.prompts
            if ceiling is not None:
                best = self.objective.bounds(self.cache, p)[1]
                if (1 - best) / max(width, 1) > ceiling():
                    return best, p.prompts
        return self.objective.value(self.cache, p, expected), None

    def set_order(self, lo: int, hi: int, params: dict) -> tuple[float, dict] | None:
        """Order chunks by their damage under one candidate, worst first (for early exits).

        The chunks are scored side by side on the workers. The candidate is the method's
        cheap first look when it has one, otherwise the fitted candidate itself, whose score
        is then returned so the scan does not score it twice (None otherwise).
        """
        cheap = self.method.cheap(params) if hi > lo else None
        used = self.fitted(lo, hi, cheap if cheap is not None else params)
        suffix = self.suffix(lo, hi, used)
        self.inputs_at(hi)
        futs = [self.submit(self.final, suffix, lo, k) for k in range(len(self.cache.chunks))]
        finals = [f.result() for f in futs]
        damage = []
        for c, h in zip(self.cache.chunks, finals, strict=True):
            total, count = self.objective.stat(self.cache, self.dense, c, h)
            damage.append(self.objective.damage(total, count))
        self.order = sorted(range(len(damage)), key=lambda k: -damage[k])
        if cheap is not None:
            return None
        return self.objective.score(self.cache, self.dense, finals), used

    # ---- speculation -----------------------------------------------------------------------
    def submit(self, fn: Callable, *args) -> Future | Lazy:
        return Lazy(fn, *args) if self.pool is None else self.pool.submit(fn, *args)

    def drain(self, pending: deque) -> None:
        """Stop and forget speculative evaluations (an earlier candidate was accepted)."""
        self.cancel.set()
        for *_, fut in pending:
            if isinstance(fut, Future) and not fut.cancel():
                try:
                    fut.result()
                except Speculation:
                    pass
        pending.clear()
        self.cancel.clear()

    # ---- decisions ---------------------------------------------------------------------------
    def log(
        self,
        lo: int,
        hi: int,
        s: float,
        accepted: bool,
        params: dict,
        threshold: float | None,
        scored: int | None = None,
        attention: bool = False,
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
        if attention:
            event["unit"] = ATTENTION
        self.candidates.append(event)
        if self.callback is not None:
            self.callback(dict(event))

    def progress(self, event: dict) -> None:
        """Tell the caller how a step is going (not logged: the step logs its ranges at its
        end); such events carry ``pending``."""
        if self.callback is not None:
            self.callback({**event, "pending": True})

    def event_log(self, event: dict) -> None:
        """Log an event that is not one range's score (e.g. an evolutionary generation)."""
        self.candidates.append(event)
        if self.callback is not None:
            self.callback(dict(event))

    def accept(self, lo: int, hi: int, s: float, params: dict, attention: bool = False) -> None:
        self.accepted.append((lo, hi, s))
        method = ATTENTION if attention else self.method.name
        self.merges.append(Merge(lo, hi, method, dict(params), s))
        if attention:
            self.cur = drop_attention(self.cur, [lo])
        elif hi > lo:  # the official loop's merge of zero extra layers leaves the model as is
            self.removed += hi - lo
            self.cur = collapse_model(self.cur, [(lo, hi)], self.method, params)
        for ins in self.inputs:  # layers above lo changed; their inputs are recomputed on demand
            del ins[lo + 1 :]
        if self.monitor is not None:
            self.progress({"phase": "Validating the new plan", "done": 0, "of": None, "unit": ""})
            self.monitor.record(self.cur, self.snapshot())
            # the whole curve so far (a few points): a live view redraws it as it grows
            self.progress({"curve": self.monitor.curve.to_dict()})

    def snapshot(self) -> dict:
        """What it takes to come back to the current plan (models share their tensors)."""
        return {
            "cur": self.cur,
            "accepted": list(self.accepted),
            "merges": list(self.merges),
            "removed": self.removed,
        }

    def restore(self, state: dict) -> None:
        """Back to a plan :meth:`snapshot` took (a budget broken by a later step)."""
        self.cur, self.removed = state["cur"], state["removed"]
        self.accepted, self.merges = list(state["accepted"]), list(state["merges"])
        self.inputs = [list(c.inputs) for c in self.cache.chunks]
        self.memo.clear()

    def removed_params(self) -> int:
        return self.params_before - count_params(self.cur)

    def unit_size(self, lo: int, hi: int, attention: bool = False) -> float:
        """What a candidate removes, in layers (sub-block search: layer-equivalents of its
        parameters, so an attention block counts about a quarter of a layer)."""
        if not self.blocks:
            return max(hi - lo, 1)
        layers = get_layers(self.cur)
        if attention:
            n = attention_params(self.cur, lo)
        else:
            n = sum(sum(p.numel() for p in layers[i].parameters()) for i in range(lo + 1, hi + 1))
        return n / self.layer_size

    def done(self) -> bool:
        if self.monitor is not None and self.monitor.over:
            return True
        if self.blocks and self.need_params is not None:
            return self.removed_params() >= self.need_params
        return self.need is not None and self.removed >= self.need

    def cap(self, lo: int, hi: int) -> int:
        """Shorten a range so a target is met exactly, never overshot."""
        return hi if self.need is None else min(hi, lo + self.need - self.removed)
