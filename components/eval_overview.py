"""The Evaluate tab's overview of every model: one table of the builds (and the original) with
a line on where its figures come from, and the Pareto points of the builds, the baselines and
the original (parameters removed against held-out perplexity ratio)."""

from __future__ import annotations

import math

import pandas as pd

from . import plots
from .state import Session


def points(session: Session) -> pd.DataFrame:
    """Every model with both coordinates of the Pareto plot: params removed (%) and held-out
    perplexity ratio (× its own original): the builds, the baselines, the original."""
    rows = [{"label": "original", "kind": "original", "removed": 0.0, "ratio": 1.0}]
    for b in session.builds:
        r = b.metrics.get("ho_ratio")
        if r is not None and b.params_removed is not None:
            rows.append(
                {"label": b.id, "kind": "your models", "removed": b.params_removed, "ratio": r}
            )
    t = pd.DataFrame(session.baselines)
    if not t.empty and "ppl" in t:
        dense = t.loc[t["method"] == "dense", "ppl"]
        ref = float(dense.iloc[0]) if len(dense) else math.nan
        for _, r in t[t["method"] != "dense"].iterrows():
            if pd.notna(r["ppl"]) and pd.notna(r["params_removed"]):
                healed = " + LoRA" if r.get("healed") is True else ""
                rows.append(
                    {
                        "label": f"{r['method']}{healed} {100 * r['target_ratio']:.0f} %",
                        "kind": "baselines",
                        "removed": 100 * float(r["params_removed"]),
                        "ratio": float(r["ppl"]) / ref,
                    }
                )
    return pd.DataFrame(rows)


def overview(session: Session) -> tuple[pd.DataFrame, str]:
    """One table of every build (and the original), with a line on where the figures come from."""
    table = session.table()
    if table.empty:
        table = pd.DataFrame(columns=["id", "layers", "params removed %", "ppl held-out"])
    else:
        dense = pd.DataFrame(
            [
                {
                    "id": "original",
                    "layers": "",
                    "params removed %": 0.0,
                    "ppl held-out": round(session.dense_ppl, 2) if session.dense_ppl else None,
                    "ppl ratio held-out (×)": 1.0 if session.dense_ppl else None,
                }
            ]
        )
        table = pd.concat([dense, table], ignore_index=True)[list(table.columns)]
    srcs = sorted({b.metrics["ho_src"] for b in session.builds if "ho_src" in b.metrics})
    legend = (
        "<b>cal.</b>: on the calibration prompts, when the model was built · <b>held-out</b>: "
        "on held-out text, by Evaluate · KL = KL(original‖model), nats per token · ratio = "
        "perplexity ÷ the original's."
    )
    if not srcs:
        note = f"<small>{legend} Press <b>Evaluate all</b> for held-out figures.</small>"
    elif len(srcs) == 1:
        note = f"<small>{legend} Held-out text: {srcs[0]}.</small>"
    else:
        note = (
            "<span class='laco-msg-error'>⚠ The held-out columns come from different texts or "
            f"settings ({'; '.join(srcs)}): press **Evaluate all** to score every model alike.</span>"
        )
    if session.baselines:
        note += " <small>Baselines: their own run (first 8 windows of the bundled held-out text).</small>"
    return table, note


def show(session: Session):
    table, note = overview(session)
    return table, plots.pareto(points(session)), note
