"""Zero-shot task scores through lm-evaluation-harness, and the papers' table of them.

LaCo (Yang et al. 2024) and LLM-Pruner (Ma et al. 2023) report pruned models as accuracy on
lm-evaluation-harness tasks (PIQA, HellaSwag, WinoGrande, ARC-e/c, BoolQ, OBQA…), their
average, and that average as a percentage of the dense model's. :func:`run_tasks` runs the
real harness (``lm-eval`` 0.4.13, the ``eval`` extra) on a model already in memory through its
HF wrapper, so a collapsed model is scored without being saved first; :func:`paper_table`
lays several models' scores out like those papers' tables.

Our own offline task ``laco_mc`` (``assets/tasks/``) is always on the include path. In any
task YAML found on the include path, a relative ``dataset_kwargs.data_files`` (or
``data_dir``) is read relative to the YAML's folder, so a private task travels as one folder.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import LacoError
from .lmeval_table import paper_table, table_markdown
from .lmeval_tasks import (
    BUNDLED_TASKS,
    Progress,
    import_lm_eval,
    include_paths,
    load_tasks,
    resolve_local_files,
)

# lm-eval's default (100,000) bootstraps non-mean metrics such as perplexity for minutes on a
# CPU; accuracies use the closed-form standard error whatever this is.
BOOTSTRAP_ITERS = 1000


def _progress_lm(HFLM, CacheHook, progress: Progress | None):
    """HFLM subclass reporting finished requests to ``progress`` (tqdm bars off)."""

    class _Counter(CacheHook):
        # lm-eval calls add_partial once per finished request (it feeds its response cache)
        def __init__(self, lm) -> None:
            super().__init__(None)
            self.lm = lm

        def add_partial(self, attr: str, req: Any, res: Any) -> None:
            if attr in ("loglikelihood", "generate_until"):
                self.lm._advance(1)

    class ProgressHFLM(HFLM):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._done, self._total, self._what = 0, 0, ""
            self.set_cache_hook(_Counter(self))

        def _start(self, kind: str, requests: list, total: int) -> None:
            names = sorted({getattr(r, "task_name", None) or "?" for r in requests})
            self._done, self._total = 0, total
            self._what = f"{kind} ({', '.join(names)})"
            if progress:
                progress(0, total, self._what)

        def _advance(self, n: int) -> None:
            self._done = min(self._total, self._done + n)
            if progress:
                progress(self._done, self._total, self._what)

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self._start("loglikelihood", requests, len(requests))
            return super().loglikelihood(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            self._start("generation", requests, len(requests))
            return super().generate_until(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            # progress in scoring windows: lm-eval cuts each document into windows of
            # max_length predicted tokens, ceil(tokens / max_length) per document
            total = sum(
                max(1, math.ceil(len(self.tok_encode(r.args[0])) / self.max_length))
                for r in requests
            )
            self._start("perplexity windows", requests, total)
            self._rolling = True
            try:
                return super().loglikelihood_rolling(requests, disable_tqdm=True)
            finally:
                self._rolling = False

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            out = super()._loglikelihood_tokens(
                requests, disable_tqdm=True, override_bs=override_bs
            )
            if getattr(self, "_rolling", False):
                self._advance(len(requests))
            return out

    return ProgressHFLM


def _json_safe(value: Any) -> Any:
    """Python scalars only: numpy numbers unwrapped, NaN/inf and lm-eval's 'N/A' as None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value == "N/A":
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def task_metrics(results: dict) -> dict[str, dict[str, Any]]:
    """Every task's (and group's) metrics from an lm-eval results dict, JSON-safe.

    Metric keys lose lm-eval's default filter suffix (``acc,none`` -> ``acc``); other
    filters stay (``exact_match,strict-match``). ``samples`` is the number of documents scored.
    """
    out: dict[str, dict[str, Any]] = {}
    n_samples = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
        row: dict[str, Any] = {}
        for key, value in metrics.items():
            if key in ("name", "sample_len"):
                continue
            metric, _, filt = key.partition(",")
            row[metric if filt in ("", "none") else key] = _json_safe(value)
        if task in n_samples:
            row["samples"] = int(n_samples[task].get("effective", 0))
        out[task] = row
    return out


def run_tasks(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: list[str],
    include_path: str | Path | Sequence[str | Path] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    max_length: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run lm-evaluation-harness tasks on a model in memory (no re-save).

    The model is wrapped in lm-eval's ``HFLM(pretrained=model, tokenizer=tokenizer)``, so a
    collapsed model that shares tensors with its original is scored as it is. Global random
    states (python, numpy, torch) that lm-eval seeds are restored afterwards.

    Args:
        model: A causal LM (any device; lm-eval uses the model's).
        tokenizer: Its tokenizer (lm-eval sets a pad token on it when it has none).
        tasks: lm-eval task names, e.g. ``["piqa", "hellaswag"]`` or ``["laco_mc"]``.
        include_path: Folder(s) of extra task YAMLs; ``assets/tasks`` is always included.
        limit: Score only the first ``limit`` documents of each task (quick checks; papers
            use every document).
        num_fewshot: Few-shot examples per prompt (default: the task's own, else 0).
        batch_size: Sequences per forward pass.
        progress: ``progress(done, total, what)`` while tasks load and requests are scored.
        max_length: Context length for lm-eval (default: the model's maximum positions).

    Returns:
        ``{task: {metric: value}}`` for every task and group run, e.g.
        ``{"laco_mc": {"acc": 0.52, "acc_stderr": 0.07, "acc_norm": 0.5, ..., "samples": 52}}``;
        JSON-safe.

    Raises:
        LacoError: when lm-eval is not installed, a task is unknown or its data cannot be
            downloaded or read (one line, naming what was missing).
    """
    if limit is not None and limit < 1:
        raise LacoError(f"--limit must be at least 1 (got {limit}).")
    if num_fewshot is not None and num_fewshot < 0:
        raise LacoError(f"--num-fewshot must be 0 or more (got {num_fewshot}).")
    if batch_size < 1:
        raise LacoError(f"Batch size must be at least 1 (got {batch_size}).")
    lm_eval, CacheHook, HFLM, _, _, _ = import_lm_eval()
    manager, loaded = load_tasks(tasks, include_path, progress)

    lm_cls = _progress_lm(HFLM, CacheHook, progress)
    kwargs: dict[str, Any] = {"max_length": max_length} if max_length else {}
    lm = lm_cls(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
    py_state, np_state = random.getstate(), _numpy_state()
    with torch.random.fork_rng(devices=[]):
        try:
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(loaded.values()),
                task_manager=manager,
                num_fewshot=num_fewshot,
                limit=limit,
                bootstrap_iters=BOOTSTRAP_ITERS,
                log_samples=False,
            )
        finally:
            random.setstate(py_state)
            _restore_numpy_state(np_state)
    if results is None:  # only non-zero ranks of a distributed run get None
        raise LacoError("lm-eval returned no results (was this a distributed worker?).")
    return task_metrics(results)


def _numpy_state():
    import numpy as np

    return np.random.get_state()


def _restore_numpy_state(state) -> None:
    import numpy as np

    np.random.set_state(state)


# ---- the papers' table -----------------------------------------------------------------------


__all__ = [
    "BUNDLED_TASKS",
    "include_paths",
    "load_tasks",
    "paper_table",
    "resolve_local_files",
    "run_tasks",
    "table_markdown",
    "task_metrics",
]
