"""Every real model that installs here, end to end: the default pipeline to a size and within
a quality budget, beside the plain-drop baselines, on held-out text nothing calibrates on.

Models: the embedded SmolLM2-135M (``default``) and Gemma 3 270M (``gemma3-270m``; 63 % of its
parameters in the embedding, BOS at the start of every sequence). Rows per model: the dense
model, the default pipeline (``laco auto`` with one target) at each size, the quality budgets,
ShortGPT and angular drops of as many layers as the default's middle size. Each row has its
sizes three ways, held-out perplexity ratios on both texts (A expository, B fiction), the
search's own validation ratio and the wall time. At the headline size the default heal follows
(distillation on the dense model's samples, validation stop) with the whole pipeline held to
each total of BENCH_MODELS_HEAL: its heal gets what the collapse left of that total, sampling
included (the first heal samples, the next continues from the per-model sample cache).

Writes ``bench/results/models.json`` (rows not run this time are kept) and
``docs/models_pareto.png`` (one panel per model).

Knobs (environment): BENCH_MODELS (default ``default,gemma3-270m``), BENCH_MODELS_SIZES
(``model=target:value;…`` pairs per model, default below), BENCH_MODELS_BUDGETS (default
1.25,1.5,2 on Gemma and 1.5 on SmolLM; empty: none), BENCH_MODELS_WINDOWS (256-token windows per text,
default 0: all), BENCH_MODELS_HEAL (whole-pipeline seconds with a heal, default 600,900; empty:
no heal rows), BENCH_MODELS_HEAL_SETTINGS (the heal's declared settings, ``schedule=cosine,…``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from laco_core.analysis.baselines import angular_block, drop_layers, shortgpt_layers
from laco_core.analysis.evaluate import perplexity
from laco_core.assets import STORY_TEXT, read_prompts, read_text
from laco_core.loading.models import load_model
from laco_core.pipeline import apply_steps, context
from laco_core.pipeline import run as run_steps
from laco_core.presets import best_collapse
from laco_core.search.config import size_report
from laco_core.steps.heal import HEAL_PARAMS, default_heal

from .common import at_least, at_most, report, section

ROOT = Path(__file__).resolve().parents[1]
# per model: the sizes of the default pipeline (SearchConfig target field, value)
SIZES = {
    "default": [("target_ratio", 0.2), ("target_block_ratio", 0.2)],
    "gemma3-270m": [("target_layers", 2), ("target_layers", 4), ("target_layers", 6)],
}
BUDGETS = {"default": [1.5], "gemma3-270m": [1.25, 1.5, 2.0]}
# the targets: (model, target) -> held-out A ratio at most; pipeline seconds at most
QUALITY = {("default", "target_ratio", 0.2): 1.8, ("gemma3-270m", "target_layers", 4): 2.5}
SECONDS = {("default", "target_ratio", 0.2): 180, ("gemma3-270m", "target_layers", 4): 300}
# healed, the whole pipeline (collapse, sampling, heal) within 15 CPU-minutes
HEALED = {"default": 1.4, "gemma3-270m": 1.6}


def _held_out(model, tok, windows) -> tuple[float, float]:
    return (
        perplexity(model, tok, read_text(), 256, max_windows=windows),
        perplexity(model, tok, read_text(STORY_TEXT), 256, max_windows=windows),
    )


def _row(spec, kind, target, model, dense, tok, windows, ref, seconds, **extra) -> dict:
    a, b = _held_out(model, tok, windows)
    size = size_report(model, dense)
    row = {
        "model": spec,
        "method": kind,
        "target": target,
        "layers": size["layers"],
        "layers_removed": size["layers_removed"],
        "block_params_removed": size["block_params_removed"],
        "params_removed": size["params_removed"],
        "ppl_A": a,
        "ppl_B": b,
        "ratio_A": a / ref[0],
        "ratio_B": b / ref[1],
        "seconds": seconds,
        **extra,
    }
    print(
        f"    {spec} {kind} {target}: {size['layers']} layers, A {row['ratio_A']:.2f}x, "
        f"B {row['ratio_B']:.2f}x, {seconds:.0f} s {extra.get('plan', '')}",
        flush=True,
    )
    return row


def _sizes(spec: str):
    raw = os.environ.get("BENCH_MODELS_SIZES")
    if not raw:
        return SIZES.get(spec, SIZES["default"])
    out = []
    for part in raw.split(";"):
        name, _, pairs = part.partition("=")
        if name.strip() == spec:
            for p in pairs.split(","):
                k, v = p.split(":")
                out.append((k.strip(), float(v) if "." in v else int(v)))
    return out


def bench_model(spec: str, windows: int | None) -> list[dict]:
    lm = load_model(spec, dtype="float32", device="cpu")
    dense, tok = lm.model, lm.tokenizer
    section(f"{spec}: {lm.num_layers} layers, {size_report(dense)['embedding_share']:.0%} outside")
    t0 = time.perf_counter()
    ref = _held_out(dense, tok, windows)
    rows = [_row(spec, "dense", None, dense, dense, tok, windows, ref, time.perf_counter() - t0)]
    runs = [(k, v) for k, v in _sizes(spec)]
    raw = os.environ.get("BENCH_MODELS_BUDGETS")  # set but empty: no budget rows
    budgets = BUDGETS.get(spec, [1.5]) if raw is None else [float(x) for x in raw.split(",") if x]
    runs += [("max_ppl_ratio", q) for q in budgets]
    middle = None
    for key, value in runs:
        t0 = time.perf_counter()
        try:
            model, recipe = run_steps(lm, best_collapse(**{key: value}), context(lm))
        except Exception as e:  # a budget no plan meets is a finding, not a crash
            print(f"    {spec} default {key}={value}: {e}", flush=True)
            rows.append(
                {"model": spec, "method": "default", "target": f"{key}={value}", "error": str(e)}
            )
            continue
        seconds = time.perf_counter() - t0
        step = recipe.steps[-1]
        curve = step.curve or {}
        last = (curve.get("points") or [{}])[-1]
        valid = last.get("ppl_ratio_refit") or last.get("ppl_ratio")
        row = _row(
            spec,
            "default",
            f"{key}={value}",
            model,
            dense,
            tok,
            windows,
            ref,
            seconds,
            plan=recipe.describe(),
            valid_ratio=valid,
            knee=curve.get("knee"),
        )
        rows.append(row)
        name = f"{spec} default {key}={value}"
        if (spec, key, value) in QUALITY:
            at_most(
                f"{name}: held-out ppl / dense (A)",
                row["ratio_A"],
                QUALITY[spec, key, value],
                f"B {row['ratio_B']:.2f}x",
            )
            at_most(f"{name}: pipeline seconds", seconds, SECONDS[spec, key, value])
            middle = lm.num_layers - row["layers"]
            rows += healed_rows(lm, model, seconds, f"{key}={value}", windows, ref)
        elif key == "max_ppl_ratio":
            at_most(
                f"{name}: held-out ppl / dense (A) within the budget",
                row["ratio_A"],
                value,
                f"validation {valid:.2f}x, B {row['ratio_B']:.2f}x",
            )
            if value == 1.5 and spec == "gemma3-270m":
                at_least(f"{name}: layers removed", lm.num_layers - row["layers"], 2)
        else:
            report(
                f"{name}: held-out ppl / dense (A)", row["ratio_A"], note=f"B {row['ratio_B']:.2f}x"
            )
    n = middle or max(1, lm.num_layers // 5)
    prompts = read_prompts()
    for kind, select in (("shortgpt", shortgpt_layers), ("angular", angular_block)):
        t0 = time.perf_counter()
        layers = sorted(select(dense, tok, prompts, n))
        model = drop_layers(dense, layers)
        rows.append(
            _row(
                spec,
                kind,
                f"target_layers={n}",
                model,
                dense,
                tok,
                windows,
                ref,
                time.perf_counter() - t0,
                plan=f"drop {layers}",
            )
        )
        report(f"{spec} {kind} {n} layers: held-out ppl / dense (A)", rows[-1]["ratio_A"])
    return rows


def _heal_settings() -> dict:
    """BENCH_MODELS_HEAL_SETTINGS (``name=value,…`` of the heal's declared settings)."""
    raw = os.environ.get("BENCH_MODELS_HEAL_SETTINGS", "")
    pairs = [p.split("=", 1) for p in raw.split(",") if "=" in p]
    return {d.name: d.check(v, "heal") for d in HEAL_PARAMS for k, v in pairs if k == d.name}


def healed_rows(lm, model, collapse_s: float, target: str, windows, ref) -> list[dict]:
    """The collapsed ``model`` healed by the default heal within what each whole-pipeline
    total of BENCH_MODELS_HEAL leaves after its collapse (``collapse_s``)."""
    totals = [float(x) for x in os.environ.get("BENCH_MODELS_HEAL", "600,900").split(",") if x]
    spec, rows = lm.spec, []
    for total in totals:
        events: list[dict] = []
        budget = total - collapse_s
        if budget <= 0:
            print(f"    {spec}: no time left to heal within {total:.0f} s", flush=True)
            continue
        t0 = time.perf_counter()
        heal = default_heal(budget, **_heal_settings())
        healed, (step,) = apply_steps(model, [heal], context(lm, events.append))
        sampled = next((e for e in events if "samples" in e), {})
        row = _row(
            spec,
            "default + heal",
            f"{target}, whole ≤ {total:.0f} s",
            healed,
            lm.model,
            lm.tokenizer,
            windows,
            ref,
            collapse_s + time.perf_counter() - t0,
            plan=step.describe(),
            heal_steps=step.steps,
            best_step=step.best_step,
            validation_curve=step.validation_curve,
            samples=sampled.get("samples"),
            samples_cached=sampled.get("cached"),
            sampling_seconds=sampled.get("seconds"),
            whole_budget=total,
        )
        rows.append(row)
        print(f"      validation curve {step.validation_curve}", flush=True)
        name = f"{spec} default {target} healed, whole pipeline ≤ {total:.0f} s"
        note = (
            f"B {row['ratio_B']:.2f}x; {row['samples_cached']} of {row['samples']} samples cached"
        )
        if total == max(totals):
            at_most(f"{name}: held-out ppl / dense (A)", row["ratio_A"], HEALED[spec], note)
        else:
            report(f"{name}: held-out ppl / dense (A)", row["ratio_A"], note=note)
    if len(rows) > 1:  # a longer budget never ends worse (held-out, not the validation slice)
        longest, *others = sorted(rows, key=lambda r: -r["whole_budget"])
        at_most(
            f"{spec} healed: held-out ratio of the longest budget vs the best shorter one",
            longest["ratio_A"],
            min(r["ratio_A"] for r in others),
        )
    return rows


def _row_key(row: dict) -> tuple:
    """What a row measured: the model, the method and its target."""
    return row.get("model"), row.get("method"), str(row.get("target"))


def _method_order(kind: str) -> tuple[int, str]:
    """The default pipeline first, then its healed rows, then the baselines by name."""
    return ({"default": 0, "default + heal": 1}.get(kind, 2), kind)


def pareto(rows: list[dict], path: Path) -> None:
    """Layers removed vs held-out perplexity ratio (A), one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    models = list(dict.fromkeys(r["model"] for r in rows))
    # one colour per method in every panel, whatever order the rows were written in
    kinds = sorted({r["method"] for r in rows if r["method"] != "dense"}, key=_method_order)
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, spec in zip(axes[0], models, strict=True):
        pts = [r for r in rows if r["model"] == spec and "ratio_A" in r and r["method"] != "dense"]
        for kind in dict.fromkeys(sorted((r["method"] for r in pts), key=_method_order)):
            g = sorted((r for r in pts if r["method"] == kind), key=lambda r: r["layers_removed"])
            ax.plot(
                [100 * r["layers_removed"] for r in g],
                [r["ratio_A"] for r in g],
                "o-" if kind == "default" else "s",
                color=plt.get_cmap("tab10")(kinds.index(kind)),
                label=kind,
            )
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}x"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks([1, 1.25, 1.5, 2, 3, 5, 10, 30])
        ax.set_xlabel("layers removed (%)")
        ax.set_ylabel("held-out perplexity ÷ dense (A)")
        ax.set_title(spec)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"Pareto plot: {path}")


def main() -> None:
    specs = [s.strip() for s in os.environ.get("BENCH_MODELS", "default,gemma3-270m").split(",")]
    windows = int(os.environ.get("BENCH_MODELS_WINDOWS", "0")) or None
    rows: list[dict] = []
    for spec in specs:
        rows += bench_model(spec, windows)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    import json

    # rows not run this time (other models, sizes, budgets) are kept: one model or one size
    # at a time fits a session
    path = out / "models.json"
    kept = json.loads(path.read_text()) if path.exists() else []
    ran = {_row_key(r) for r in rows}
    rows = [r for r in kept if _row_key(r) not in ran] + rows
    path.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    pareto(rows, ROOT / "docs" / "models_pareto.png")
