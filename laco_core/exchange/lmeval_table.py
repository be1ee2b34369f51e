"""The paper-style table of lm-evaluation-harness results: accuracy per task, average, % of dense.

:func:`paper_table` holds the numbers (the CLI prints it); :func:`noise_table` writes each
score with its standard error ("76.9 ± 5.9") and says when a model's average is within noise
of the dense model's (:data:`NOISE_RULE`), for the app and the model card.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..errors import LacoError

PERPLEXITY_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity")


def _headline(metrics: dict[str, Any]) -> float | None:
    """The accuracy a task contributes to the average: ``acc``, else ``acc_norm``."""
    for key in ("acc", "acc_norm"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


def _task_order(results: dict[str, dict[str, dict]], reference: str | None) -> list[str]:
    """Every task of any model, in the order first seen: the tables' column order.

    Raises:
        LacoError: when ``reference`` is given and is not one of the models.
    """
    if reference is not None and reference not in results:
        raise LacoError(f"Reference '{reference}' is not among the models: {', '.join(results)}.")
    order: list[str] = []
    for per_task in results.values():
        order += [t for t in per_task if t not in order]
    return order


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
    task_order = _task_order(results, reference)
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


# ---- scores with their standard errors ---------------------------------------------------------

NOISE_SIGMAS = 2.0
NOISE_RULE = (
    "Within noise: the average differs from the dense model's by less than "
    f"{NOISE_SIGMAS:g}× their combined standard error √(se_model² + se_dense²); a k-task "
    "average has se = √(Σ se_task²) / k. The two errors are taken as independent, which "
    "overstates the error of a difference on the same questions."
)


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stderr(metrics: dict[str, Any], key: str) -> float | None:
    se = metrics.get(f"{key}_stderr")
    return float(se) if _num(se) else None


def average(
    per_task: dict[str, dict], tasks: list[str] | None = None
) -> tuple[float, float | None] | None:
    """The mean headline accuracy (``acc``, else ``acc_norm``) over ``tasks`` in %, and its
    standard error (√(Σ se²) / k, None when a task gave none); None without any accuracy."""
    vals, errs = [], []
    for task in tasks if tasks is not None else list(per_task):
        m = per_task.get(task) or {}
        key = next((k for k in ("acc", "acc_norm") if _num(m.get(k))), None)
        if key is None:
            continue
        vals.append(100.0 * float(m[key]))
        errs.append(_stderr(m, key))
    if not vals:
        return None
    if None in errs:
        return sum(vals) / len(vals), None
    return sum(vals) / len(vals), 100.0 * math.sqrt(sum(e * e for e in errs)) / len(errs)


def noise_verdict(value: float, se: float | None, ref: float, ref_se: float | None) -> str | None:
    """``within noise`` or ``beyond noise`` by :data:`NOISE_RULE` (None without both errors)."""
    if se is None or ref_se is None:
        return None
    if value == ref:
        return "within noise"
    return (
        "within noise"
        if abs(value - ref) < NOISE_SIGMAS * math.hypot(se, ref_se)
        else "beyond noise"
    )


def with_stderr(value: float | None, se: float | None, digits: int = 1) -> str:
    """``76.9 ± 5.9`` (``76.9`` without an error, ``–`` without a value)."""
    if value is None or not _num(value):
        return "–"
    return f"{value:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def questions(per_task: dict[str, dict]) -> str:
    """What the scores were measured on: ``laco_mc (3 questions)``, one entry per task."""
    parts = []
    for task, m in per_task.items():
        n = m.get("samples") if isinstance(m, dict) else None
        parts.append(f"{task} ({n} questions)" if _is_int(n) else task)
    return ", ".join(parts)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def noise_table(
    results: dict[str, dict[str, dict]],
    reference: str,
    references: dict[str, dict[str, dict]] | None = None,
) -> pd.DataFrame:
    """The papers' table with every score as ``value ± stderr`` (text cells).

    Columns: ``TASK acc`` / ``TASK acc_norm`` (%), perplexity metrics as they are, ``average``
    (as :func:`paper_table`'s) and ``% of dense``: the share of the dense average, labelled
    ``within noise`` by :data:`NOISE_RULE`, else with the difference and its error; and
    ``questions``: how many of each task's questions were scored.

    Args:
        results: ``{model label: run_tasks(...) output}``, rows in this order.
        reference: The dense model's label (a key of ``results``).
        references: Per label, the dense scores that row is compared with (the same run's,
            when rows come from different runs); default: ``results[reference]``.

    Raises:
        LacoError: when ``reference`` is not one of the models.
    """
    task_order = _task_order(results, reference)
    rows = {}
    for label, per_task in results.items():
        row: dict[str, str] = {}
        for task in task_order:
            m = per_task.get(task) or {}
            for key in ("acc", "acc_norm"):
                if _num(m.get(key)):
                    se = _stderr(m, key)
                    row[f"{task} {key}"] = with_stderr(
                        100.0 * m[key], None if se is None else 100.0 * se
                    )
            for key in PERPLEXITY_METRICS:
                if _num(m.get(key)):
                    row[f"{task} {key}"] = with_stderr(m[key], _stderr(m, key), 2)
        mine = average(per_task, task_order)
        row["average"] = with_stderr(*mine) if mine else "–"
        dense = (references or {}).get(label, results[reference])
        tasks = [t for t in task_order if t in per_task and t in dense]
        mine, ref = average(per_task, tasks), average(dense, tasks)
        if label == reference:
            row["% of dense"] = "100 % (dense)"
        elif mine is None or ref is None or not ref[0]:
            row["% of dense"] = "–"
        else:
            share = f"{100.0 * mine[0] / ref[0]:.0f} %"
            verdict = noise_verdict(mine[0], mine[1], ref[0], ref[1])
            if verdict == "within noise":
                row["% of dense"] = f"{share} (within noise)"
            elif verdict is None:
                row["% of dense"] = f"{share} (no stderr)"
            else:
                diff = mine[0] - ref[0]
                se = math.hypot(mine[1], ref[1])
                row["% of dense"] = f"{share} (Δ {diff:+.1f} ± {se:.1f}, beyond noise)"
        counts = [(t, (per_task.get(t) or {}).get("samples")) for t in task_order]
        counts = [(t, n) for t, n in counts if _is_int(n)]
        row["questions"] = (
            str(counts[0][1]) if len(counts) == 1 else ", ".join(f"{t} {n}" for t, n in counts)
        ) or "–"
        rows[label] = row
    df = pd.DataFrame.from_dict(rows, orient="index").fillna("–")
    df.index.name = "model"
    return df


def text_table_markdown(df: pd.DataFrame) -> str:
    """A table of text cells (:func:`noise_table`) as GitHub markdown."""
    cols = list(df.columns)
    lines = [
        "| " + " | ".join([df.index.name or "model", *cols]) + " |",
        "|" + "---|" + "---:|" * len(cols),
    ]
    for label, row in df.iterrows():
        lines.append("| " + " | ".join([str(label), *(str(row[c]) for c in cols)]) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "NOISE_RULE",
    "NOISE_SIGMAS",
    "average",
    "noise_table",
    "noise_verdict",
    "paper_table",
    "questions",
    "table_markdown",
    "text_table_markdown",
    "with_stderr",
]
