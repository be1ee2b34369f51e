"""The model card's lines for what an app session measured on a model (``laco_core.findings``):
held-out perplexity, calibration and validation figures, each with its source, and the
lm-eval table with standard errors and the within-noise label."""

from __future__ import annotations

import math

from ..findings import Findings
from ..search.curve import cliff_line
from .lmeval_table import NOISE_RULE, noise_table, questions, text_table_markdown


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _f(value, digits: int) -> str:
    return f"{value:,.{digits}f}" if _finite(value) else "–"


def findings_lines(findings: Findings, skip_validation: bool = False) -> list[str]:
    """The model card's Evaluation lines for ``findings`` (markdown), each with its source."""
    out: list[str] = []
    ho = findings.get("heldout") or {}
    if ho:
        out += [
            f"Held-out perplexity, measured on {ho.get('text') or 'held-out text'} "
            "(never used to calibrate, fit or heal):",
            "",
            "| metric | value |",
            "|---|---:|",
        ]
        rows = [
            ("perplexity", _f(ho.get("ppl"), 2)),
            ("base model perplexity (same text)", _f(ho.get("ref_ppl"), 2)),
            ("perplexity ÷ base model's", _f(ho.get("ratio"), 3) + "×"),
            ("KL(base ‖ this) per token, nats", _f(ho.get("kl"), 4)),
            ("top-1 agreement with the base model", _f(ho.get("top1"), 1) + " %"),
        ]
        out += [f"| {label} | {value} |" for label, value in rows if not value.startswith("–")]
        out.append("")
    cal = findings.get("calibration") or {}
    if cal:
        parts = [f"KL(base ‖ this) {_f(cal.get('kl'), 4)} nats per token"]
        if _finite(cal.get("top1")):
            parts.append(f"top-1 agreement {_f(cal['top1'], 1)} %")
        if _finite(cal.get("cos")):
            parts.append(f"final hidden-state cosine {_f(cal['cos'], 4)}")
        src = cal.get("text") or "the calibration prompts"
        out += [f"On {src}, when it was built: {'; '.join(parts)}.", ""]
    val = findings.get("validation") or {}
    if val and not skip_validation and _finite(val.get("ratio")):
        out += [
            f"Validation perplexity ({val.get('text') or 'validation slice'}, nothing was fitted "
            f"on it): {val['ratio']:.2f}× the base model's, when it was built.",
            *([f"**{loud}**"] if (loud := cliff_line(val["ratio"])) else []),
            "",
        ]
    lm = findings.get("lmeval") or {}
    if lm.get("model"):
        table = noise_table({"base model": lm["dense"], "this model": lm["model"]}, "base model")
        out += [
            "Zero-shot accuracy (%) through lm-evaluation-harness on "
            f"{questions(lm['model'])}, each ± its standard error. {NOISE_RULE}",
            "",
            text_table_markdown(table).strip(),
            "",
        ]
    return out


__all__ = ["findings_lines"]
