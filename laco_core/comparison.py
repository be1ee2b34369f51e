"""One comparison of every compression method: parameters removed vs held-out perplexity and KL.

Methods (at each target ratio, optionally followed by a LoRA heal):

* ``laco_paper``: LaCo Algorithm 1 (Yang et al., 2024) with the paper's C, L, I, T, run until
  the target share of parameters is removed;
* ``laco_best``: our automatic collapse (greedy over ranges, KL objective by default);
* ``shortgpt``: drop the lowest Block-Influence layers (Men et al., 2024);
* ``angular``: drop the contiguous block with the smallest angular distance (Gromov et al., 2024);
* ``llm_pruner``: LLM-Pruner block width pruning (Ma et al., 2023).

Calibration prompts, heal text and evaluation text are kept separate by the caller (our assets
are disjoint by construction).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from transformers import PreTrainedModel

from .errors import LacoError
from .evaluate import _batches, _encode, _pad_id, _windows
from .metrics import kl_sum, log_probs, next_token_nll
from .ops import prune_baseline, prune_llm_pruner, run_search
from .search.config import SearchConfig
from .sharing import count_params

METHODS = ("laco_paper", "laco_best", "shortgpt", "angular", "llm_pruner")
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
# our automatic collapse: best range each step, judged by the KL to the dense model
BEST_SEARCH = {"strategy": "greedy", "objective": "kl", "method": "official"}

Progress = Callable[[int, int, str], None]


def _laco(model, tokenizer, prompts, ratio: float, overrides: dict) -> PreTrainedModel:
    return run_search(
        model, tokenizer, list(prompts), SearchConfig(target_ratio=ratio, **overrides)
    ).model


def build_point(
    method: str,
    model: PreTrainedModel,
    tokenizer,
    calib_prompts: Sequence[str],
    ratio: float,
    best_search: dict | None = None,
    grad_cache: dict | None = None,
) -> PreTrainedModel:
    """The compressed model of one method at one target ratio (shares tensors with ``model``).

    Raises:
        LacoError: for an unknown method or an unreachable ratio.
    """
    if method == "laco_paper":
        return _laco(model, tokenizer, calib_prompts, ratio, {"strategy": "paper"})
    if method == "laco_best":
        return _laco(model, tokenizer, calib_prompts, ratio, dict(best_search or BEST_SEARCH))
    if method in ("shortgpt", "angular"):
        return prune_baseline(method, model, tokenizer, calib_prompts, ratio)[0]
    if method == "llm_pruner":
        return prune_llm_pruner(
            model, tokenizer, list(calib_prompts), ratio, grad_cache=grad_cache
        ).model
    raise LacoError(f"Unknown method '{method}'; choose from: {', '.join(METHODS)}.")


def _row(
    method, ratio, removed, layers, ppl, kl, healed: bool, seconds: float, note: str = ""
) -> dict:
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
    point. Windows are those of :func:`laco_core.evaluate.perplexity`, so the perplexities match.
    """

    def __init__(self, reference, tokenizer, text: str, seq_len: int, windows: int | None):
        wins = _windows(_encode(tokenizer, text), seq_len, windows)
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

    def score(self, model=None) -> tuple[float, float]:
        """``(perplexity, mean KL(dense ‖ model) per token in nats)``; None: the dense model."""
        nll = kl = 0.0
        n_pred = n_tok = 0
        for (ids, mask), ref in zip(self.batches, self.ref, strict=True):
            logp = ref.float() if model is None else self._logp(model, ids, mask).cpu()  # (B, T, V)
            valid = mask.bool()  # (B, T)
            part, n = next_token_nll(logp, ids, valid[:, 1:])
            nll, n_pred = nll + part, n_pred + n
            part, n = kl_sum(ref.float(), logp, valid)
            kl, n_tok = kl + part, n_tok + n
        return math.exp(nll / n_pred), kl / n_tok


def compare_all(
    model: PreTrainedModel,
    tokenizer,
    eval_text: str,
    calib_prompts: Sequence[str],
    ratios: Sequence[float] = (0.1, 0.2, 0.3),
    heal_steps: int = 0,
    methods: Sequence[str] = METHODS,
    callback: Progress | None = None,
    heal_text: str | None = None,
    heal_kwargs: dict | None = None,
    eval_seq_len: int = 256,
    eval_windows: int | None = 8,
    best_search: dict | None = None,
    heal_ratios: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Compress ``model`` with every method at every ratio and measure each result.

    Args:
        model: The dense model (left unchanged).
        tokenizer: Its tokenizer.
        eval_text: Held-out text for perplexity and KL (never used for calibration/healing).
        calib_prompts: Calibration prompts for the searches, baselines and LLM-Pruner.
        ratios: Target fractions of all parameters to remove.
        heal_steps: LoRA steps for a healed copy of every point (0: no healed rows).
        methods: Subset of ``METHODS``.
        callback: ``callback(done, total, message)`` after each step; raise to cancel.
        heal_text: Training text for healing (default: ``assets/train_text.txt``).
        heal_kwargs: Extra arguments of :func:`laco_core.heal.heal` (rank, lr, seq_len…).
        eval_seq_len: Evaluation window length.
        eval_windows: Evaluate on the first this many windows (None: the whole text).
        best_search: SearchConfig fields for ``laco_best`` (default ``BEST_SEARCH``).
        heal_ratios: Heal only the points at these ratios (default: every ratio).

    Returns:
        One row per (method, ratio, healed) with ``COLUMNS``; a ``dense`` row at ratio 0.
        A point that cannot be built (e.g. a ratio the search cannot reach) has NaN metrics
        and the reason in ``note``.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LacoError(f"Unknown method(s) {unknown}; choose from: {', '.join(METHODS)}.")
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise LacoError("Ratios must be fractions between 0 and 1, e.g. 0.1,0.2,0.3.")
    healed_at = set(ratios if heal_ratios is None else heal_ratios) if heal_steps else set()
    total = 1 + len(methods) * (len(ratios) + len([r for r in ratios if r in healed_at]))
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total, message)

    params0 = count_params(model)
    n0 = model.config.num_hidden_layers
    rows: list[dict] = []
    t0 = time.perf_counter()
    scorer = _Scorer(model, tokenizer, eval_text, eval_seq_len, eval_windows)
    ppl, kl = scorer.score()
    rows.append(_row("dense", 0.0, 0.0, n0, ppl, kl, False, time.perf_counter() - t0))
    tick("dense")
    grad_cache: dict = {}
    for method in methods:
        for ratio in ratios:
            t0 = time.perf_counter()
            try:
                pruned = build_point(
                    method, model, tokenizer, calib_prompts, ratio, best_search, grad_cache
                )
            except (LacoError, ImportError) as e:
                for healed in (False, True) if ratio in healed_at else (False,):
                    nan = math.nan
                    rows.append(_row(method, ratio, nan, None, nan, nan, healed, 0.0, str(e)))
                    tick(f"{method} {ratio:.0%} skipped")
                continue
            build_s = time.perf_counter() - t0
            removed = 1 - count_params(pruned) / params0
            layers = pruned.config.num_hidden_layers
            ppl, kl = scorer.score(pruned)
            rows.append(_row(method, ratio, removed, layers, ppl, kl, False, build_s))
            tick(f"{method} {ratio:.0%}")
            if ratio in healed_at:
                from .heal import heal

                t1 = time.perf_counter()
                healed = heal(
                    pruned, tokenizer, heal_text, steps=heal_steps, **(heal_kwargs or {})
                ).model
                ppl, kl = scorer.score(healed)
                seconds = build_s + time.perf_counter() - t1
                rows.append(_row(method, ratio, removed, layers, ppl, kl, True, seconds))
                del healed
                tick(f"{method} {ratio:.0%} healed")
            del pruned
    return pd.DataFrame(rows, columns=COLUMNS)


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


__all__ = ["BEST_SEARCH", "COLUMNS", "METHODS", "build_point", "compare_all", "markdown_table"]
