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
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .assets import ASSETS
from .errors import LacoError

BUNDLED_TASKS = ASSETS / "tasks"
Progress = Callable[[int, int, str], None]  # (done, total, what) -> None

# Builders of ``datasets`` that read local files; any other dataset_path is a Hub dataset.
LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas"})
# lm-eval's default (100,000) bootstraps non-mean metrics such as perplexity for minutes on a
# CPU; accuracies use the closed-form standard error whatever this is.
BOOTSTRAP_ITERS = 1000
PERPLEXITY_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity")
OFFLINE_TASK_HINT = "or run an offline task such as laco_mc"


def _import_lm_eval():
    """The harness's modules, or a LacoError saying how to install them."""
    try:
        import lm_eval
        from lm_eval.api.model import CacheHook
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from lm_eval.tasks._index import Kind
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        raise LacoError(
            "lm-evaluation-harness is not installed: pip install 'laco-explorer[eval]' "
            "(or pip install lm-eval==0.4.13)."
        ) from None
    return lm_eval, CacheHook, HFLM, TaskManager, Kind, load_yaml


# ---- include path and task configs -----------------------------------------------------------


def include_paths(include_path: str | Path | Sequence[str | Path] | None = None) -> list[Path]:
    """Our bundled task folder followed by the user's folders (later ones take precedence).

    Raises:
        LacoError: for a folder that does not exist.
    """
    extra = [] if include_path is None else include_path
    if isinstance(extra, (str, Path)):
        extra = [extra]
    paths = [BUNDLED_TASKS]
    for p in extra:
        path = Path(p).expanduser()
        if not path.is_dir():
            raise LacoError(f"Task include path '{p}' is not a folder of lm-eval task YAMLs.")
        paths.append(path.resolve())
    return paths


def resolve_local_files(config: dict, base: Path) -> bool:
    """Make a local-file task's relative ``data_files`` / ``data_dir`` absolute against ``base``.

    lm-eval hands them to ``datasets.load_dataset`` as they are, which reads them relative to
    the working directory; a task folder is only portable when they are read relative to the
    YAML. A path that does not exist beside the YAML is left alone.

    Returns:
        True when ``config`` was changed (in place).
    """
    if config.get("dataset_path") not in LOCAL_BUILDERS:
        return False
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict):
        return False
    changed = False

    def fix(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
            changed = True
            return str(base / value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    if "data_dir" in kwargs:
        kwargs["data_dir"] = fix(kwargs["data_dir"])
    elif "data_files" in kwargs:
        kwargs["data_files"] = fix(kwargs["data_files"])
    return changed


def _task_manager(tasks: list[str], paths: list[Path]):
    """A TaskManager that knows ``tasks``: only our include paths when that suffices.

    Indexing lm-eval's ~15,000 built-in entries takes seconds, so tasks that all live in the
    include paths are served by an index of those paths alone.
    """
    _, _, _, TaskManager, Kind, _ = _import_lm_eval()
    small = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
    index = small.task_index
    if all(name in index and index[name].kind == Kind.TASK for name in tasks):
        return small
    return TaskManager(include_path=[str(p) for p in paths])


def _dataset_of(entry, load_yaml) -> str | None:
    """``'path'`` or ``'path' (config name)``: the dataset a task entry reads, per its YAML."""
    if entry is None or entry.yaml_path is None:
        return None
    try:
        cfg = load_yaml(entry.yaml_path, resolve_func=False)
    except Exception:  # an unreadable YAML is reported by lm-eval's own load below
        return None
    path, name = cfg.get("dataset_path"), cfg.get("dataset_name")
    if not path:
        return None
    return f"'{path}' (config {name})" if name else f"'{path}'"


def _is_network_error(error: BaseException) -> bool:
    """True for errors that mean 'could not download' (OSError family, HTTP client errors)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return True
        mod = type(e).__module__.split(".")[0]
        if mod.startswith(("httpx", "requests", "urllib3", "aiohttp", "huggingface_hub")):
            return True
        e = e.__cause__ or e.__context__
    return False


def _offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def load_tasks(
    tasks: Sequence[str],
    include_path: str | Path | Sequence[str | Path] | None = None,
    progress: Progress | None = None,
) -> tuple[Any, dict[str, Any]]:
    """lm-eval Task objects for ``tasks``, their datasets downloaded (or read locally).

    Args:
        tasks: lm-eval task, group or tag names.
        include_path: Folder(s) of extra task YAMLs (our ``assets/tasks`` is always included).
        progress: Called as ``progress(i, n, "loading TASK")`` before each task.

    Returns:
        ``(task_manager, {name: Task or Group})``, tasks in the order asked; pass the
        manager on to ``simple_evaluate`` (without one it indexes every built-in task again).

    Raises:
        LacoError: for an unknown task, a dataset that cannot be downloaded (offline, Hub
            unreachable) or a local data file that is missing; always one line.
    """
    names = [t.strip() for t in tasks if t and t.strip()]
    if not names:
        raise LacoError("No tasks given: name at least one lm-eval task, e.g. --tasks laco_mc.")
    if len(set(names)) != len(names):
        raise LacoError(f"A task is named twice in {', '.join(names)}; name each once.")
    _, _, _, _, Kind, load_yaml = _import_lm_eval()
    paths = include_paths(include_path)
    manager = _task_manager(names, paths)
    index = manager.task_index
    loaded: dict[str, Any] = {}
    for i, name in enumerate(names):
        if progress:
            progress(i, len(names), f"loading {name}")
        entry = index.get(name)
        if entry is None:
            where = ", ".join(str(p) for p in paths)
            raise LacoError(
                f"Unknown lm-eval task '{name}': not built in and not in {where}; "
                "`lm-eval ls tasks` lists the built-in ones."
            )
        spec: str | dict = name
        if entry.kind == Kind.TASK and entry.yaml_path is not None:
            cfg = load_yaml(entry.yaml_path, resolve_func=True)
            if resolve_local_files(cfg, Path(entry.yaml_path).parent):
                spec = cfg  # an inline config carrying the absolute data paths
        try:
            built = manager.load([spec])
        except Exception as e:
            raise _load_error(name, _dataset_of(entry, load_yaml), e) from None
        loaded.update(built["groups"] or built["tasks"])
    if progress:
        progress(len(names), len(names), "tasks loaded")
    return manager, loaded


def _load_error(task: str, dataset: str | None, error: Exception) -> LacoError:
    """One actionable line for a task whose data could not be read."""
    if not _is_network_error(error):
        return LacoError(f"lm-eval could not load task '{task}': {type(error).__name__}: {error}")
    builder = dataset.split("'")[1] if dataset else None
    if builder in LOCAL_BUILDERS:
        return LacoError(
            f"lm-eval task '{task}' could not read its {builder} data files "
            f"({error}); check dataset_kwargs in its YAML (relative paths are read from the "
            "YAML's folder)."
        )
    name = f"dataset {dataset}" if dataset else "its dataset"
    why = (
        "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
        if _offline()
        else f"the Hugging Face Hub could not be reached or refused it ({type(error).__name__})"
    )
    return LacoError(
        f"Could not download {name} for lm-eval task '{task}': {why}; run with network "
        f"access to the Hub, {OFFLINE_TASK_HINT}."
    )


# ---- running ---------------------------------------------------------------------------------


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
    lm_eval, CacheHook, HFLM, _, _, _ = _import_lm_eval()
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


def _headline(metrics: dict[str, Any]) -> float | None:
    """The accuracy a task contributes to the average: ``acc``, else ``acc_norm``."""
    for key in ("acc", "acc_norm"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


def paper_table(results: dict[str, dict[str, dict]], reference: str | None) -> pd.DataFrame:
    """Accuracy per task, their average and % of the dense average, one row per model.

    Laid out like LaCo's and LLM-Pruner's tables: columns ``TASK acc`` and ``TASK acc_norm``
    (where the task reports it) in percent, perplexity metrics as they are (lower is better;
    left out of the average), ``average`` (the mean over tasks of ``acc``, or of ``acc_norm``
    for a task without ``acc``) and ``% of dense`` (the row's average ÷ the reference row's).

    Args:
        results: ``{model label: run_tasks(...) output}``, rows in this order.
        reference: The label of the dense model (a key of ``results``), or None for no
            ``% of dense`` column.

    Returns:
        A DataFrame indexed by model label.

    Raises:
        LacoError: when ``reference`` is not one of the models.
    """
    if reference is not None and reference not in results:
        raise LacoError(f"Reference '{reference}' is not among the models: {', '.join(results)}.")
    task_order: list[str] = []
    for per_task in results.values():
        task_order += [t for t in per_task if t not in task_order]
    rows = {}
    for label, per_task in results.items():
        row: dict[str, float | None] = {}
        accs = []
        for task in task_order:
            m = per_task.get(task, {})
            for key in ("acc", "acc_norm"):
                if isinstance(m.get(key), (int, float)):
                    row[f"{task} {key}"] = 100.0 * float(m[key])
            for key in PERPLEXITY_METRICS:
                if isinstance(m.get(key), (int, float)):
                    row[f"{task} {key}"] = float(m[key])
            head = _headline(m)
            if head is not None:
                accs.append(100.0 * head)
        row["average"] = sum(accs) / len(accs) if accs else None
        rows[label] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "model"
    if reference is not None and "average" in df:
        ref = df.loc[reference, "average"]
        df["% of dense"] = (
            100.0 * df["average"] / ref if ref is not None and not pd.isna(ref) and ref else None
        )
    return df


def table_markdown(df: pd.DataFrame, digits: int = 1) -> str:
    """A paper table as GitHub markdown (accuracies in %, perplexities with 2 decimals)."""

    def cell(col: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if any(col.endswith(" " + m) for m in PERPLEXITY_METRICS):
            return f"{value:.2f}"
        return f"{value:.{digits}f}"

    cols = list(df.columns)
    header = "| " + " | ".join([df.index.name or "model", *cols]) + " |"
    rule = "|" + "---|" + "---:|" * len(cols)
    lines = [header, rule]
    for label, row in df.iterrows():
        lines.append("| " + " | ".join([str(label), *(cell(c, row[c]) for c in cols)]) + " |")
    return "\n".join(lines) + "\n"


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
