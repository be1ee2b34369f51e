"""One comparison of compression methods: parameters removed vs held-out perplexity and KL.

Every method is a list of recipe steps at a target ratio (``POINTS``), run by the pipeline,
optionally followed by a LoRA heal, and scored on held-out text that nothing calibrates, fits
or heals on. Adding a method to the comparison is one entry in ``POINTS``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch

from ..analysis.evaluate import _batches, _pad_id, _windows, check_stop
from ..analysis.metrics import kl_sum, log_probs, next_token_nll
from ..arch.sharing import count_params
from ..errors import LacoError
from ..loading.models import LoadedModel
from ..pipeline import context
from ..pipeline import run as run_steps
from ..presets import best_collapse
from ..recipe import Step, TextSource
from ..search.config import SearchConfig
from ..steps.drop import DropStep
from ..steps.heal import HealStep
from ..steps.prune import PruneStep
from ..steps.search import SearchStep


def _paper(ratio: float, cal: TextSource) -> list[Step]:
    return [SearchStep(SearchConfig(strategy="paper", target_ratio=ratio), cal)]


def _best(**changes) -> Callable[[float, TextSource], list[Step]]:
    """The default pipeline at a ratio, with some of its search settings changed."""

    def steps(ratio: float, cal: TextSource) -> list[Step]:
        (step,) = best_collapse(target_ratio=ratio)
        for key, value in changes.items():
            setattr(step.config, key, value)
        return [step]

    return steps


# method -> steps at a target ratio (the calibration text given is the comparison's prompts;
# the best pipelines calibrate on their own training-text paragraphs)
POINTS: dict[str, Callable[[float, TextSource], list[Step]]] = {
    "laco_paper": _paper,
    "laco_best": _best(),
    "laco_greedy_drop": _best(refit=None),
    "laco_best_linear": _best(refit="drop_linear"),
    "laco_evo": _best(strategy="evo", strategy_params={"lazy": True}),
    "laco_best_blocks": _best(units="blocks"),
    "shortgpt": lambda r, cal: [DropStep("shortgpt", r, calibration=cal)],
    "angular": lambda r, cal: [DropStep("angular", r, calibration=cal)],
    "llm_pruner": lambda r, cal: [PruneStep(r, calibration=cal)],
}
METHODS = tuple(POINTS)
DEFAULT_METHODS = ("laco_paper", "laco_best", "shortgpt", "angular", "llm_pruner")
COLUMNS = [
    "method",
    "target_ratio",
    "params_removed",
    "ppl",
    "kl",
    "healed",
    "layers",
    "seconds",
    "note",
]
Progress = Callable[[int, int, str], None]


def _row(method, ratio, removed, layers, ppl, kl, healed: bool, seconds: float, note="") -> dict:
    """One comparison point, columns in the order of the returned DataFrame."""
    return dict(
        method=method,
        target_ratio=ratio,
        params_removed=removed,
        ppl=ppl,
        kl=kl,
        healed=healed,
        layers=layers,
        seconds=seconds,
        note=note,
    )


class _Scorer:
    """Held-out perplexity and KL to the dense model from ONE forward of each model.

    The dense model's next-token log-probabilities on the evaluation windows are computed once
    and kept (float32, or float16 above ~1 GB), instead of re-running the dense model for every
    point. Windows are those of :func:`laco_core.analysis.evaluate.perplexity`, so the perplexities match.
    """

    def __init__(self, reference, tokenizer, text: str, seq_len: int, windows: int | None):
        wins = _windows(tokenizer, text, seq_len, windows)
        self.batches = list(_batches(wins, 4, _pad_id(tokenizer)))
        vocab = reference.get_output_embeddings().weight.shape[0]
        big = sum(ids.numel() for ids, _ in self.batches) * vocab * 4 > 2**30
        self.dtype = torch.float16 if big else torch.float32
        self.ref = [
            self._logp(reference, ids, mask).to("cpu", self.dtype) for ids, mask in self.batches
        ]

    @staticmethod
    @torch.no_grad()
    def _logp(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dev = next(model.parameters()).device
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits
        return log_probs(logits)  # (B, T, V)

    @property
    def nbytes(self) -> int:
        """Bytes of the dense log-probabilities kept (B × T × vocabulary per batch)."""
        return sum(r.numel() * r.element_size() for r in self.ref)

    def score(self, model=None, stop: threading.Event | None = None) -> tuple[float, float]:
        """``(perplexity, mean KL(dense ‖ model) per token in nats)``; None: the dense model.
        ``stop``: cancels between evaluation windows."""
        nll = kl = 0.0
        n_pred = n_tok = 0
        for (ids, mask), ref in zip(self.batches, self.ref, strict=True):
            check_stop(stop)
            logp = ref.float() if model is None else self._logp(model, ids, mask).cpu()  # (B, T, V)
            valid = mask.bool()  # (B, T)
            part, n = next_token_nll(logp, ids, valid[:, 1:])
            nll, n_pred = nll + part, n_pred + n
            part, n = kl_sum(ref.float(), logp, valid)
            kl, n_tok = kl + part, n_tok + n
        return math.exp(nll / n_pred), kl / n_tok


def as_base(model, tokenizer, spec: str = "in-memory") -> LoadedModel:
    """A model already in memory, described as a loaded base model for the pipeline."""
    p = next(model.parameters())
    return LoadedModel(model, tokenizer, spec, p.dtype, p.device, 0.0, spec)


def compare_all(
    model,
    tokenizer,
    eval_text: str,
    calib_prompts: Sequence[str],
    ratios: Sequence[float] = (0.1, 0.2, 0.3),
    heal_steps: int = 0,
    methods: Sequence[str] = DEFAULT_METHODS,
    callback: Progress | None = None,
    heal_text: str | None = None,
    heal_kwargs: dict | Callable[[str, float], dict] | None = None,
    eval_seq_len: int = 256,
    eval_windows: int | None = 8,
    heal_ratios: Sequence[float] | None = None,
    extra_texts: dict[str, str] | None = None,
    on_point: Callable[[str, float, bool, object, object], None] | None = None,
    method_ratios: dict[str, Sequence[float]] | None = None,
    stop: threading.Event | None = None,
    activations_of: Callable | None = None,
    count: Callable[[object, Callable[[object], int]], None] | None = None,
) -> pd.DataFrame:
    """Compress ``model`` with every method at every ratio and measure each result.

    Args:
        model: The dense model (left unchanged).
        tokenizer: Its tokenizer.
        eval_text: Held-out text for perplexity and KL (never used for calibration/healing).
        calib_prompts: Calibration prompts of the searches, baselines and LLM-Pruner.
        ratios: Target fractions of all parameters to remove.
        heal_steps: LoRA steps for a healed copy of every point (0: no healed rows).
        methods: Names in ``POINTS``.
        callback: ``callback(done, total, message)`` after each point; raise to cancel.
        heal_text: Training text for healing (default: both bundled training texts).
        heal_kwargs: More fields of the ``HealStep`` (rank, lr, teacher, seconds…), or
            ``heal_kwargs(method, ratio)`` returning them per point.
        eval_seq_len: Evaluation window length.
        eval_windows: Evaluate on the first this many windows (None: the whole text).
        heal_ratios: Heal only the points at these ratios (default: every ratio).
        extra_texts: More held-out texts, name -> text: columns ``ppl_<name>``/``kl_<name>``.
        on_point: ``on_point(method, ratio, healed, model, recipe)`` for every point built.
        method_ratios: Some methods' own ratios instead of ``ratios`` (a costly method at
            fewer sizes).
        stop: The job's stop Event, passed to every point's steps and checked between
            evaluation windows (raises ``Cancelled``).
        activations_of: The engine's memo of dense activations (``Engine.activations_of``),
            so the points' searches and fits share and count them.
        count: ``count(value, size)`` counts the dense reference log-probs (and the points'
            own caches) against a memory budget while they live (``Engine.count``).

    Returns:
        One row per (method, ratio, healed) with ``COLUMNS``; a ``dense`` row at ratio 0.
        A point that cannot be built (e.g. a ratio the search cannot reach) has NaN metrics
        and the reason in ``note``.
    """
    unknown = [m for m in methods if m not in POINTS]
    if unknown:
        raise LacoError(f"Unknown method(s) {unknown}; choose from: {', '.join(POINTS)}.")
    every = [r for rs in [ratios, *(method_ratios or {}).values()] for r in rs]
    if not ratios or any(not 0 < r < 1 for r in every):
        raise LacoError("Ratios must be fractions between 0 and 1, e.g. 0.1,0.2,0.3.")
    healed_at = set(ratios if heal_ratios is None else heal_ratios) if heal_steps else set()
    ratios_of = {m: list((method_ratios or {}).get(m, ratios)) for m in methods}
    total = 1 + sum(len(rs) + len([r for r in rs if r in healed_at]) for rs in ratios_of.values())
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total, message)

    base = as_base(model, tokenizer)
    ctx = context(base, stop=stop, activations_of=activations_of)
    ctx.counted = count
    cal = TextSource.of(list(calib_prompts), "calibration_prompts")
    t0 = time.perf_counter()
    scorers = {"": _Scorer(model, tokenizer, eval_text, eval_seq_len, eval_windows)}
    for name, text in (extra_texts or {}).items():
        scorers[f"_{name}"] = _Scorer(model, tokenizer, text, eval_seq_len, eval_windows)
    params0, n0 = count_params(model), model.config.num_hidden_layers
    for scorer in scorers.values() if count is not None else ():
        count(scorer, _Scorer.nbytes.fget)  # while it lives: until the comparison returns

    def measured(m) -> dict:
        out = {}
        for suffix, scorer in scorers.items():
            out[f"ppl{suffix}"], out[f"kl{suffix}"] = scorer.score(m, stop)
        return out

    dense = measured(None)
    rows = [{**_row("dense", 0.0, 0.0, n0, 0, 0, False, time.perf_counter() - t0), **dense}]
    tick("dense")
    for method in methods:
        for ratio in ratios_of[method]:
            check_stop(stop)  # between points; the point's steps check it inside too
            t0 = time.perf_counter()
            try:
                pruned, recipe = run_steps(base, POINTS[method](ratio, cal), ctx)
            except (LacoError, ImportError) as e:
                for healed in (False, True) if ratio in healed_at else (False,):
                    nan = math.nan
                    rows.append(_row(method, ratio, nan, None, nan, nan, healed, 0.0, str(e)))
                    tick(f"{method} {ratio:.0%} skipped")
                continue
            build_s = time.perf_counter() - t0
            removed = 1 - count_params(pruned) / params0
            layers = pruned.config.num_hidden_layers
            rows.append(
                {
                    **_row(method, ratio, removed, layers, 0, 0, False, build_s),
                    **measured(pruned),
                }
            )
            if on_point is not None:
                on_point(method, ratio, False, pruned, recipe)
            tick(f"{method} {ratio:.0%}")
            if ratio in healed_at:
                t1 = time.perf_counter()
                text = TextSource.of([heal_text]) if heal_text else None
                kwargs = heal_kwargs(method, ratio) if callable(heal_kwargs) else heal_kwargs
                step = HealStep(steps=heal_steps, text=text, **(kwargs or {}))
                healed, hrecipe = run_steps(base, [step], ctx, recipe)
                seconds = build_s + time.perf_counter() - t1
                row = _row(method, ratio, removed, layers, 0, 0, True, seconds)
                rows.append({**row, **measured(healed)})
                if on_point is not None:
                    on_point(method, ratio, True, healed, hrecipe)
                del healed
                tick(f"{method} {ratio:.0%} healed")
            del pruned
    extra = [c for c in rows[0] if c not in COLUMNS]
    return pd.DataFrame(rows, columns=COLUMNS + extra)


def markdown_table(df: pd.DataFrame) -> str:
    """The comparison as a markdown table: one row per method and ratio, ppl/KL before and after healing."""
    has_heal = bool(df["healed"].any())
    head = "| method | target | removed | ppl | KL |" + (
        " ppl healed | KL healed |" if has_heal else ""
    )
    sep = "|---|---|---|---|---|" + ("---|---|" if has_heal else "")
    lines = [head, sep]
    plain = df[~df["healed"]]
    for _, r in plain.iterrows():
        cells = [
            r["method"],
            f"{r['target_ratio']:.0%}",
            "—" if pd.isna(r["params_removed"]) else f"{r['params_removed']:.1%}",
            _fmt(r["ppl"]),
            _fmt(r["kl"], 3),
        ]
        if has_heal:
            h = df[
                df["healed"]
                & (df["method"] == r["method"])
                & (df["target_ratio"] == r["target_ratio"])
            ]
            cells += [_fmt(h["ppl"].iloc[0]), _fmt(h["kl"].iloc[0], 3)] if len(h) else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


__all__ = ["COLUMNS", "DEFAULT_METHODS", "METHODS", "POINTS", "compare_all", "markdown_table"]
