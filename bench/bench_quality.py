"""The quality of every method and lever at 10/20/30 % removed, training-free and healed, in
one end-to-end run on the embedded default model, with the wall time of each row.

Held-out perplexity is measured on two texts nothing here calibrates, fits or heals on:
``assets/eval_text.txt`` (expository, "A") and ``assets/heldout_story.txt`` (narrative fiction
and dialogue, "B"). Searches and fits calibrate on ``assets/train_text.txt`` (its paragraphs)
or ``assets/calibration_prompts.txt``; heals train on ``assets/train_text.txt``.

Writes ``bench/results/quality.json`` and the Pareto plot ``docs/quality_pareto.png``
(parameters removed vs perplexity ratio, both held-out texts).

Knobs (environment): BENCH_QUALITY_RATIOS (default 0.1,0.2,0.3), BENCH_QUALITY_METHODS
(default every method below), BENCH_QUALITY_HEAL_SECONDS (every method's heal, a time budget,
default 120 s: one budget for all, a fair comparison), BENCH_QUALITY_BEST_HEAL_SECONDS (the
default pipeline's heal, default 840 s: under the 15 CPU-minute target with its own
evaluation), BENCH_QUALITY_HEAL_RATIOS (default 0.2), BENCH_QUALITY_WINDOWS (256-token windows
per text, default 0: all), BENCH_QUALITY_ONLY_AT (methods measured at one ratio only,
``method:ratio`` pairs, default ``laco_best_blocks:0.2``: its search of sub-blocks takes a
step per attention removed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from laco_core.assets import STORY_TEXT, read_prompts, read_text
from laco_core.loading.models import load_model
from laco_core.runtime.comparison import compare_all

from .common import at_most, report, section

METHODS = (
    "laco_paper",
    "laco_greedy_drop",
    "laco_best",
    "laco_best_linear",
    "laco_evo",
    "laco_best_blocks",
    "shortgpt",
    "angular",
    "llm_pruner",
)
# the default pipeline's heal: KL distillation from the dense model, LoRA on every projection
HEAL = {"teacher": True, "rank": 16, "lr": 2e-3, "seq_len": 128, "batch_size": 4}
TARGETS = {0.2: (1.8, 1.4), 0.3: (2.5, None)}  # training-free and healed ppl ratio targets
ROOT = Path(__file__).resolve().parents[1]


def _env_list(name: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


def main() -> None:
    ratios = [float(x) for x in _env_list("BENCH_QUALITY_RATIOS", "0.1,0.2,0.3")]
    methods = _env_list("BENCH_QUALITY_METHODS", ",".join(METHODS))
    heal_s = float(os.environ.get("BENCH_QUALITY_HEAL_SECONDS", "120"))
    best_heal_s = float(os.environ.get("BENCH_QUALITY_BEST_HEAL_SECONDS", "840"))
    heal_at = [float(x) for x in _env_list("BENCH_QUALITY_HEAL_RATIOS", "0.2")]
    windows = int(os.environ.get("BENCH_QUALITY_WINDOWS", "0")) or None
    only_at = {
        m: [float(r)]
        for m, r in (
            x.split(":") for x in _env_list("BENCH_QUALITY_ONLY_AT", "laco_best_blocks:0.2")
        )
    }
    section(
        f"Quality end to end: {len(methods)} methods at {ratios}, heal ≤ {heal_s:.0f} s "
        f"(laco_best ≤ {best_heal_s:.0f} s) at {heal_at} (torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f})"
    )
    lm = load_model("default", dtype="float32", device="cpu")
    t0 = time.perf_counter()

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message} ({time.perf_counter() - t0:.0f} s)", flush=True)

    def heal_of(method: str, ratio: float) -> dict:
        return {**HEAL, "seconds": best_heal_s if method == "laco_best" else heal_s}

    plans: dict[tuple, str] = {}

    def built(method: str, ratio: float, healed: bool, model, recipe) -> None:
        plans[method, ratio, healed] = recipe.describe()
        print(
            f"    {method} {ratio:.0%}{' healed' if healed else ''}: {plans[method, ratio, healed]}"
        )

    df = compare_all(
        lm.model,
        lm.tokenizer,
        read_text(),
        read_prompts(),
        ratios,
        heal_steps=100_000,  # the time budget decides
        methods=methods,
        callback=progress,
        heal_kwargs=heal_of,
        method_ratios=only_at,
        on_point=built,
        eval_windows=windows,
        heal_ratios=heal_at,
        extra_texts={"B": read_text(STORY_TEXT)},
    )
    dense = df.iloc[0]
    df["ratio_A"] = df["ppl"] / dense["ppl"]
    df["ratio_B"] = df["ppl_B"] / dense["ppl_B"]
    df["recipe"] = [
        plans.get((r["method"], r["target_ratio"], bool(r["healed"])), "") for _, r in df.iterrows()
    ]
    print(table(df))
    for _, r in df.iloc[1:].iterrows():
        goal = TARGETS.get(r["target_ratio"], (None, None))[1 if r["healed"] else 0]
        name = f"{r['method']} {r['target_ratio']:.0%}{' healed' if r['healed'] else ''}"
        if r["method"] == "laco_best" and goal is not None:
            at_most(f"{name}: ppl / dense (A)", r["ratio_A"], goal, f"B {r['ratio_B']:.2f}×")
        else:
            report(f"{name}: ppl / dense (A)", r["ratio_A"], note=f"B {r['ratio_B']:.2f}×")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(df.to_json(orient="records", indent=1))
    pareto(df, ROOT / "docs" / "quality_pareto.png")


def table(df) -> str:
    """Markdown: one row per point, both held-out texts, wall time."""
    lines = [
        "| method | target | removed | healed | ppl A (×dense) | ppl B (×dense) | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        if r["method"] == "dense":
            lines.append(
                f"| dense | – | 0 % | – | {r['ppl']:.2f} | {r['ppl_B']:.2f} | {r['seconds']:.0f} s |"
            )
            continue
        removed = (
            "–" if r["params_removed"] != r["params_removed"] else f"{r['params_removed']:.1%}"
        )
        lines.append(
            f"| {r['method']} | {r['target_ratio']:.0%} | {removed} | {'yes' if r['healed'] else 'no'} "
            f"| {r['ppl']:.2f} ({r['ratio_A']:.2f}×) | {r['ppl_B']:.2f} ({r['ratio_B']:.2f}×) "
            f"| {r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def pareto(df, path: Path) -> None:
    """Parameters removed vs perplexity ratio per method, both texts, frontier drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    points = df[df["method"] != "dense"].dropna(subset=["params_removed"])
    methods = list(dict.fromkeys(points["method"]))
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, col, title in (
        (axes[0], "ratio_A", "held-out A (expository)"),
        (axes[1], "ratio_B", "held-out B (fiction)"),
    ):
        for (method, healed), g in points.groupby(["method", "healed"], sort=False):
            g = g.sort_values("params_removed")
            style = dict(marker="s", linestyle="none", markersize=8) if healed else dict(marker="o")
            label = f"{method}{' + heal' if healed else ''}"
            ax.plot(100 * g["params_removed"], g[col], color=colour[method], label=label, **style)
        front = points.sort_values("params_removed")
        best, xs, ys = float("inf"), [], []
        for x, y in zip(front["params_removed"][::-1], front[col][::-1], strict=True):
            if y < best:
                best = y
                xs.append(100 * x)
                ys.append(y)
        ax.step(xs[::-1], ys[::-1], where="post", color="black", linewidth=1, alpha=0.4)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}×"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: ""))
        ax.set_yticks([1, 1.5, 2, 3, 5, 10, 30, 100, 200])
        ax.set_xlabel("parameters removed (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("perplexity ÷ dense (log)")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), title="square: + heal")
    fig.suptitle("SmolLM2-135M: quality vs size (CPU, fp32)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"Pareto plot: {path}")
