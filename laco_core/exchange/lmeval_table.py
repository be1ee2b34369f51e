"""The paper-style table of lm-evaluation-harness results: accuracy per task, average, % of dense."""

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


__all__ = ["paper_table", "table_markdown"]
