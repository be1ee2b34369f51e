"""Findings: what was measured on a model, with what it was measured on, so it travels with it.

The app measures a model in several places (Evaluate: held-out perplexity, its ratio to the
base model's, KL and top-1 agreement; the build: the same against the calibration prompts and
the validation slice; lm-eval: task accuracies with their standard errors). Export writes them
into the model card's Evaluation section (``exchange.card``) and into the recipe's
``info["findings"]``, so a rebuilt or reloaded recipe keeps them. Each section names its
source (``text``, or the tasks' question counts for lm-eval); :func:`check` refuses a
malformed one in a file handed in (``schema``).
"""

from __future__ import annotations

import html
import math
from typing import Any, TypedDict

from .errors import LacoError

MAX_TEXT = 200  # characters of a source description
MAX_TASKS = 64  # lm-eval tasks (and groups) of one model


class HeldOut(TypedDict, total=False):
    """Evaluate on held-out text (never calibrated, fitted or healed on)."""

    ppl: float  # this model's perplexity
    ref_ppl: float  # the base model's, same text and windows
    ratio: float  # ppl ÷ ref_ppl
    kl: float  # KL(base ‖ this) per token, nats
    top1: float  # top-1 agreement with the base model, %
    text: str  # what was scored: "bundled held-out text, all of it, 256-token windows"


class Calibration(TypedDict, total=False):
    """Quick metrics on the calibration prompts, when the model was built."""

    kl: float
    top1: float  # %
    cos: float  # final hidden-state cosine with the base model
    text: str


class Validation(TypedDict, total=False):
    """Perplexity ratio on the bundled validation slice, when the model was built."""

    ratio: float
    text: str


class LmEval(TypedDict):
    """lm-evaluation-harness: this model's and the base model's scores of one run."""

    model: dict[str, dict[str, Any]]  # task -> ``run_tasks`` metrics (acc, acc_stderr, samples…)
    dense: dict[str, dict[str, Any]]  # the same tasks on the base model


class Findings(TypedDict, total=False):
    heldout: HeldOut
    calibration: Calibration
    validation: Validation
    lmeval: LmEval


SECTIONS: dict[str, type] = {
    "heldout": HeldOut,
    "calibration": Calibration,
    "validation": Validation,
}


def merged(older: dict | None, newer: dict | None) -> dict:
    """``older`` findings (a recipe's) with the sections measured again (``newer``) replaced."""
    return {**(older or {}), **{k: v for k, v in (newer or {}).items() if v}}


# ---- checks ----------------------------------------------------------------------------------


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _show(v) -> str:
    """A name from the file in a message: short, escaped (the app shows messages as HTML)."""
    return html.escape(str(v)[:40], quote=False)


def _text(v) -> bool:
    return isinstance(v, str) and len(v) <= MAX_TEXT


def check(d, where: str = "The findings") -> None:
    """Refuse findings whose sections or fields have the wrong type (one ``LacoError`` line)."""
    if not isinstance(d, dict):
        raise LacoError(f"{where} must be a mapping of sections, not {type(d).__name__}.")
    for name, section in d.items():
        if name == "lmeval":
            check_lmeval(section, "lmeval", where)
            continue
        kind = SECTIONS.get(name)
        if kind is None:
            known = ", ".join([*SECTIONS, "lmeval"])
            raise LacoError(f"{where}: unknown section '{_show(name)}'; known: {known}.")
        if not isinstance(section, dict):
            raise LacoError(f"{where}: '{name}' must be a mapping, not {type(section).__name__}.")
        for key, value in section.items():
            want = kind.__annotations__.get(key)
            if want is None:
                continue  # a field a newer version adds: kept, not shown
            if key == "text" and not _text(value):
                raise LacoError(
                    f"{where}: '{name}.text' must be a text of at most {MAX_TEXT} characters."
                )
            if key != "text" and not _number(value):
                raise LacoError(f"{where}: '{name}.{key}' must be a finite number.")


def check_metrics(metrics, where: str) -> None:
    """A session build's ``metrics``: names to numbers (``ho_*``, ``cal_*``…) or short texts
    (their sources)."""
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str)
        and (
            v is None
            or (isinstance(v, (int, float)) and not isinstance(v, bool))
            or (isinstance(v, str) and len(v) <= MAX_TEXT)
        )
        for k, v in metrics.items()
    ):
        raise LacoError(
            f"{where}: its 'metrics' must map names to numbers or texts of at most "
            f"{MAX_TEXT} characters."
        )


def check_scores(per_task, name: str = "scores", where: str = "The session") -> None:
    """``{task: {metric: number, text or null}}`` as ``run_tasks`` returns it, at field
    ``name`` of ``where``."""
    if not isinstance(per_task, dict):
        raise LacoError(f"{where}: '{name}' must be a mapping of task -> metrics.")
    if len(per_task) > MAX_TASKS:
        raise LacoError(f"{where}: '{name}' holds more than {MAX_TASKS} tasks.")
    for task, metrics in per_task.items():
        if not _text(task) or not isinstance(metrics, dict):
            raise LacoError(f"{where}: '{name}' must map each task to a mapping of its metrics.")
        for key, value in metrics.items():
            if not (_text(key) and (value is None or _number(value) or _text(value))):
                raise LacoError(
                    f"{where}: '{name}': metric '{_show(key)}' of {_show(task)} must be a "
                    "number, a short text or null."
                )


def check_lmeval(section, name: str = "lmeval", where: str = "The session") -> None:
    """An lm-eval section: ``model`` and ``dense`` score mappings."""
    if not isinstance(section, dict) or not {"model", "dense"} <= set(section):
        raise LacoError(f"{where}: '{name}' must be a mapping with 'model' and 'dense' scores.")
    for side in ("model", "dense"):
        check_scores(section[side], f"{name}.{side}", where)


__all__ = [
    "Calibration",
    "Findings",
    "HeldOut",
    "LmEval",
    "Validation",
    "check",
    "check_lmeval",
    "check_metrics",
    "check_scores",
    "merged",
]
