"""``laco prune``: LLM-Pruner width pruning or a layer-drop baseline, saved to a directory."""

from __future__ import annotations

import argparse

from ..errors import LacoError

METHODS = ("llm-pruner", "shortgpt", "angular")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..prune import AGGREGATIONS, IMPORTANCES

    p = sub.add_parser("prune", help="Prune a model (LLM-Pruner, ShortGPT or angular layer drop).")
    p.add_argument(
        "--model", default="default", help="model spec: default, Hub id, directory or .gguf"
    )
    p.add_argument("--method", choices=METHODS, default="llm-pruner")
    p.add_argument(
        "--ratio", type=float, required=True, help="fraction of ALL parameters to remove"
    )
    p.add_argument("--importance", choices=IMPORTANCES, default="param_first")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default="sum")
    p.add_argument(
        "--layers",
        help="LLM-Pruner layer range LO-HI, half-open (default: keep first 4/last 2 of 32, scaled)",
    )
    p.add_argument("--prompts", help="calibration prompts file, one per line (default: bundled)")
    p.add_argument("--samples", type=int, default=10, help="calibration windows (LLM-Pruner: 10)")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per calibration window")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def parse_layers(text: str | None) -> tuple[int, int] | None:
    """``"4-28"`` -> ``(4, 28)``; None stays None."""
    if not text:
        return None
    parts = text.replace(":", "-").split("-")
    if len(parts) != 2 or not all(s.strip().isdigit() for s in parts):
        raise LacoError(f"Cannot read layer range '{text}': write LO-HI, e.g. 4-28.")
    return int(parts[0]), int(parts[1])


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..assets import read_prompts
    from ..models import count_params, load_model

    hf_logging.disable_progress_bar()
    layers = parse_layers(args.layers)
    prompts = read_prompts(args.prompts)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    before = lm.num_params
    if args.method == "llm-pruner":
        from ..prune import prune_llm_pruner, save_pruned

        res = prune_llm_pruner(
            lm.model,
            lm.tokenizer,
            prompts,
            args.ratio,
            args.importance,
            args.aggregation,
            layers,
            args.samples,
            args.seq_len,
        )
        recipe = {**res.recipe, "model": args.model, "method": "llm-pruner"}
        path = save_pruned(res, lm.tokenizer, args.out, recipe)
        s = res.importance_summary
        detail = (
            f"{s['kv_heads_removed_per_layer']} KV head group(s) and "
            f"{s['channels_removed_per_layer']} MLP channels per layer in layers "
            f"{res.recipe['layers'][0]}-{res.recipe['layers'][1] - 1}"
        )
        after = res.params_after
    else:
        from ..baselines import prune_baseline
        from ..export import export_model

        model, dropped = prune_baseline(args.method, lm.model, lm.tokenizer, prompts, args.ratio)
        after = count_params(model)
        recipe = {
            "model": args.model,
            "method": args.method,
            "dropped_layers": dropped,
            "ratio": args.ratio,
        }
        try:
            path = export_model(model, lm.tokenizer, args.out, recipe, original=lm.model).path
        except RuntimeError as e:
            raise LacoError(str(e)) from None
        detail = f"dropped layers {', '.join(map(str, dropped))}"
    print(
        f"Pruned {args.model} with {args.method}: {detail}; parameters {before:,} -> {after:,} "
        f"({100 * (1 - after / before):.1f}% removed). Saved to {path}."
    )
    return 0
