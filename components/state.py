"""Per-session state: ids and recipe JSON only. Models and tensors live in the engine.

``gr.State`` deep-copies its initial value for every session, so the session's owner token is
drawn lazily, on first use, not when the default ``Session()`` is built. The whole session is
small JSON (:meth:`Session.to_dict`), kept in the browser so it survives a reload.

Metrics keep their source in their key: ``cal_*`` were measured on the calibration prompts
when the model was built, ``ho_*`` on held-out text by Evaluate (``ho_src`` says which text).
They never overwrite each other, and tables show them in separate, labelled columns.
lm-eval scores are kept per build with the dense model's scores of the same run
(``Entry.lmeval``), and the dense model's last scores per task (``Session.dense_lmeval``).
:meth:`Session.findings` gathers a build's measurements for its export (``laco_core.findings``).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import asdict, dataclass, field

import pandas as pd

from laco_core import schema
from laco_core.errors import LacoError
from laco_core.exchange.lmeval_table import noise_table, text_table_markdown
from laco_core.findings import Findings, check_lmeval, check_scores

SESSION_FORMAT = "laco-session"
# key -> (column header, digits); one unit per quantity: shares in %, KL in nats per token
COLUMNS = {
    "params_removed": ("params removed %", 1),
    "cal_kl": ("KL cal. (nats)", 3),
    "cal_top1": ("top-1 cal. %", 1),
    "ho_ppl": ("ppl held-out", 2),
    "ho_ratio": ("ppl ratio held-out (×)", 2),
    "ho_kl": ("KL held-out (nats)", 3),
    "ho_top1": ("top-1 held-out %", 1),
}


def calibration_metrics(m: dict, src: str | None = None) -> dict:
    """``evaluate.quick_metrics`` output under the ``cal_*`` keys (agreement in %); ``src``
    names the prompts (``cal_src``)."""
    out = {
        "cal_kl": round(float(m["kl"]), 4),
        "cal_top1": round(100 * float(m["top1_agreement"]), 2),
    }
    if m.get("final_cosine") is not None:
        out["cal_cos"] = round(float(m["final_cosine"]), 4)
    if src:
        out["cal_src"] = src
    return out


def heldout_metrics(m: dict) -> dict:
    """``evaluate.evaluate`` output (with a reference) under the ``ho_*`` keys."""
    return {
        "ho_ppl": round(float(m["ppl"]), 3),
        "ho_ref_ppl": round(float(m["ref_ppl"]), 3),
        "ho_ratio": round(float(m["ppl"]) / float(m["ref_ppl"]), 4),
        "ho_kl": round(float(m["kl"]), 4),
        "ho_top1": round(100 * float(m["top1_agreement"]), 2),
    }


def removed_percent(info: dict) -> float:
    """The share of all parameters a build removed, in percent (from its recipe's ``info``)."""
    return 100 * (1 - info["params_after"] / info["params_before"])


@dataclass
class Entry:
    """One model built in this session: its engine id, a label, its recipe as JSON."""

    id: str
    label: str
    recipe: dict
    metrics: dict = field(default_factory=dict)  # cal_* and ho_* figures
    # lm-eval: {"model": {task: scores}, "dense": {task: scores}}, dense of the same run
    lmeval: dict = field(default_factory=dict)

    @property
    def info(self) -> dict:
        return self.recipe.get("info", {}) if isinstance(self.recipe, dict) else {}

    def findings(self) -> Findings:
        """What was measured on this build, each with its source (for its export)."""
        m, out = self.metrics, {}
        ho = {k: m[f"ho_{k}"] for k in ("ppl", "ref_ppl", "ratio", "kl", "top1") if f"ho_{k}" in m}
        if ho:
            out["heldout"] = {**ho, "text": m.get("ho_src") or "held-out text"}
        cal = {k: m[f"cal_{k}"] for k in ("kl", "top1", "cos") if f"cal_{k}" in m}
        if cal:
            src = m.get("cal_src") or "the calibration prompts it was built with"
            out["calibration"] = {**cal, "text": src}
        if "valid_ratio" in m:
            out["validation"] = {"ratio": m["valid_ratio"], "text": m.get("valid_text", "")}
        if self.lmeval.get("model"):
            out["lmeval"] = {"model": self.lmeval["model"], "dense": self.lmeval["dense"]}
        return out

    @property
    def params_removed(self) -> float | None:
        """Share of the base model's parameters removed, in % (None when not recorded)."""
        recorded = self.info.get("params_before") and self.info.get("params_after")
        return removed_percent(self.info) if recorded else None


@dataclass
class Session:
    """What one browser session owns: its base model spec and the models it derived."""

    spec: str = "default"
    dtype: str = "auto"
    device: str = "auto"
    num_layers: int = 0
    builds: list[Entry] = field(default_factory=list)
    current: str | None = None  # id of the build Compare/Evaluate/Export use
    dense_ppl: float | None = None  # the base model's held-out perplexity, once evaluated
    exports: dict[str, str] = field(default_factory=dict)  # build id -> export folder
    baselines: list[dict] = field(default_factory=list)  # rows of the last baselines run
    dense_lmeval: dict = field(default_factory=dict)  # the base model's lm-eval scores per task
    ui: dict = field(default_factory=dict)  # the page: plan, method, map, tab… (``page_memory``)
    owner: str | None = None
    url_applied: bool = False  # the page's ?plan= was read (not kept)
    restored: int = 0  # builds brought back from the browser on this page load (not kept)
    # a loaded session file's page, waiting to be put back (not kept): its own copy, so a
    # page change written into ``ui`` meanwhile cannot replace it
    page_from_file: dict | None = None

    def token(self) -> str:
        """This session's owner token for the engine (drawn on first use)."""
        if self.owner is None:
            self.owner = uuid.uuid4().hex
        return self.owner

    def add(self, entry: Entry) -> None:
        self.builds = [b for b in self.builds if b.id != entry.id] + [entry]
        self.current = entry.id

    def get(self, did: str | None) -> Entry | None:
        return next((b for b in self.builds if b.id == did), None)

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for dropdowns, newest first."""
        return [(b.label, b.id) for b in reversed(self.builds)]

    # ---- kept in the browser -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything worth keeping, as JSON (no export folders: they are server paths)."""
        return {
            "format": SESSION_FORMAT,
            "version": 1,
            "spec": self.spec,
            "dtype": self.dtype,
            "device": self.device,
            "current": self.current,
            "dense_ppl": self.dense_ppl,
            "builds": [asdict(b) for b in self.builds],
            "baselines": self.baselines,
            "dense_lmeval": self.dense_lmeval,
            "ui": self.ui,
            "owner": self.owner,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Session:
        """A session from :meth:`to_dict` output (unknown keys ignored; entries checked for
        shape only: their recipes are read by the engine when first used)."""
        builds = []
        for b in d.get("builds") or []:
            if (
                isinstance(b, dict)
                and isinstance(b.get("id"), str)
                and isinstance(b.get("recipe"), dict)
            ):
                metrics = b.get("metrics") if isinstance(b.get("metrics"), dict) else {}
                lmeval = _checked(check_lmeval, b.get("lmeval"))
                label = str(b.get("label") or b["id"])
                builds.append(Entry(b["id"], label, b["recipe"], metrics, lmeval))
        owner = d.get("owner")  # a uuid4 hex drawn by ``token``; anything else: a new one
        s = cls(
            spec=str(d.get("spec") or "default"),
            dtype=str(d.get("dtype") or "auto"),
            device=str(d.get("device") or "auto"),
            builds=builds,
            baselines=[r for r in d.get("baselines") or [] if isinstance(r, dict)],
            dense_lmeval=_checked(check_scores, d.get("dense_lmeval")),
            ui=_checked_ui(d.get("ui")),
            owner=owner
            if isinstance(owner, str) and re.fullmatch(r"[0-9a-f]{32}", owner)
            else None,
        )
        s.current = (
            d.get("current") if s.get(d.get("current")) else (builds[-1].id if builds else None)
        )
        ppl = d.get("dense_ppl")
        s.dense_ppl = float(ppl) if isinstance(ppl, (int, float)) and math.isfinite(ppl) else None
        return s

    # ---- lm-eval ------------------------------------------------------------------------------
    def record_lmeval(self, results: dict[str, dict], dense: str = "original") -> None:
        """Keep an lm-eval run's scores (``{label: run_tasks output}``, ``dense`` the base
        model's): per build beside the dense scores of this run, task by task."""
        ref = results.get(dense) or {}
        self.dense_lmeval = {**self.dense_lmeval, **ref}
        for label, per_task in results.items():
            entry = self.get(label)
            if entry is None or label == dense:
                continue
            old = entry.lmeval or {"model": {}, "dense": {}}
            entry.lmeval = {
                "model": {**old.get("model", {}), **per_task},
                "dense": {**old.get("dense", {}), **{t: ref[t] for t in per_task if t in ref}},
            }

    def lmeval_markdown(self) -> str:
        """Every lm-eval score kept: the original, then each build, as ``76.9 ± 5.9`` with
        ``% of dense`` labelled within noise or not ("" when none)."""
        rows = {b.id: b.lmeval["model"] for b in self.builds if b.lmeval.get("model")}
        if not rows and not self.dense_lmeval:
            return ""
        pairs = {b.id: b.lmeval["dense"] for b in self.builds if b.lmeval.get("model")}
        table = noise_table({"original": self.dense_lmeval, **rows}, "original", pairs)
        return text_table_markdown(table)

    # ---- tables ------------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """Every build of this session: recipe summary and every figure measured, rounded,
        calibration and held-out figures in separate labelled columns."""
        rows = []
        for b in self.builds:
            info = b.info
            kinds = [s.get("kind", "") for s in b.recipe.get("steps", [])]
            row = {
                "id": b.id,
                "steps": " → ".join(kinds),
                "ranges": " ".join(f"{lo}-{hi}" for lo, hi in info.get("plan", [])),
                "layers": f"{info.get('layers_before', '?')}→{info.get('layers_after', '?')}",
                "params_removed": b.params_removed,
                **b.metrics,
            }
            rows.append(row)
        return labelled(pd.DataFrame(rows), ["id", "steps", "ranges", "layers"])


def _checked(check, value) -> dict:
    """``value`` if ``check`` accepts it (a session read back from the browser), else {}."""
    if not value:
        return {}
    try:
        check(value)
    except LacoError:
        return {}
    return dict(value)


def _checked_ui(ui) -> dict:
    """What the page kept, if it has the types ``schema.check_ui`` wants (else nothing)."""
    try:
        schema.check_ui(ui or {})
    except LacoError:
        return {}
    return dict(ui or {})


def labelled(frame: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    """``first`` columns, then every known metric column present, renamed and rounded."""
    if frame.empty:
        return frame
    cols = [c for c in first if c in frame] + [k for k in COLUMNS if k in frame]
    out = frame[cols].copy()
    for key, (_, digits) in COLUMNS.items():
        if key in out:
            out[key] = pd.to_numeric(out[key], errors="coerce").round(digits)
    return out.rename(columns={k: v[0] for k, v in COLUMNS.items()})
