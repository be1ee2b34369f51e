"""``laco prune``: LLM-Pruner width pruning or a layer-drop baseline, exported and verified."""

from __future__ import annotations

import argparse

from ..errors import LacoError
from ..exchange.export import check_target
from ..loading.limits import Limits
from ..pipeline import run as run_steps
from ..prune.importance import AGGREGATIONS
from ..prune.llm_pruner import default_layer_range
from ..recipe import TextSource
from ..registry import REGISTRY
from ..steps.drop import DropStep
from ..steps.prune import PruneStep
from .common import (
    add_model_args,
    add_out_args,
    export_measured,
    fraction,
    load,
    positive,
    read_prompt_file,
    source_dirs,
)

METHODS = ("llm-pruner", *REGISTRY.selectors)


HELP = "Prune a model (LLM-Pruner, ShortGPT or angular layer drop)."


def add_flags(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--method", choices=METHODS, default="llm-pruner")
    p.add_argument(
        "--ratio", type=fraction, required=True, help="fraction of ALL parameters to remove"
    )
    p.add_argument("--importance", choices=list(REGISTRY.importances), default="param_first")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default="sum")
    p.add_argument(
        "--layers",
        help="LLM-Pruner layer range LO-HI, half-open (default: keep first 4/last 2 of 32, scaled)",
    )
    p.add_argument("--prompts", help="calibration prompts file, one per line (default: bundled)")
    p.add_argument("--samples", type=positive, default=10, help="calibration windows")
    p.add_argument("--seq-len", type=positive, default=64, help="tokens per calibration window")
    add_out_args(p)


def parse_layers(text: str | None) -> list[int] | None:
    """``"4-28"`` -> ``[4, 28]``; None stays None."""
    if not text:
        return None
    parts = text.replace(":", "-").split("-")
    if len(parts) != 2 or not all(s.strip().isdigit() for s in parts):
        raise LacoError(f"Cannot read layer range '{text}': write LO-HI, e.g. 4-28.")
    return [int(parts[0]), int(parts[1])]


def run(args: argparse.Namespace) -> int:
    layers = parse_layers(args.layers)
    if args.seq_len < 2:
        raise LacoError("--seq-len must be at least 2 tokens.")
    texts = read_prompt_file(args.prompts)
    cal = TextSource.of(texts, None if args.prompts else "calibration_prompts")
    check_target(args.out, args.overwrite, source_dirs(args.model))
    lm = load(args)
    if args.method == "llm-pruner":
        step = PruneStep(
            args.ratio,
            args.importance,
            args.aggregation,
            layers,
            args.samples,
            args.seq_len,
            calibration=cal,
        )
    else:
        step = DropStep(args.method, args.ratio, calibration=cal)
    Limits.current().check_step(step, lm.tokenizer)
    model, recipe = run_steps(lm, [step])
    done = recipe.steps[-1]
    if args.method == "llm-pruner":
        s = done.result.importance_summary
        lo, hi = layers or default_layer_range(lm.num_layers)
        detail = (
            f"{s['kv_heads_removed_per_layer']} KV head group(s) and "
            f"{s['channels_removed_per_layer']} MLP channels per layer in layers {lo}-{hi - 1}"
        )
    else:
        detail = f"dropped layers {', '.join(map(str, done.layers))}"
    out, quality = export_measured(
        model, lm, recipe, args.out, args.overwrite, source_dirs(args.model)
    )
    before, after = recipe.info["params_before"], recipe.info["params_after"]
    print(
        f"Pruned {args.model} with {args.method}: {detail}; parameters {before:,} -> {after:,} "
        f"({100 * (1 - after / before):.1f}% removed). Saved to {out.path}: "
        f"{quality}"
    )
    return 0
