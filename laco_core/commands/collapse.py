"""``laco collapse``: merge layer ranges of a model and export the result, verified."""

from __future__ import annotations

import argparse

from ..adapters import num_layers
from ..errors import LacoError
from ..export import export_model
from ..merge import get_method, parse_ranges, validate_ranges
from ..methods import REGISTRY
from ..models import count_params, load_model
from ..search.correction import collapse_any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collapse",
        help="Merge layer ranges into single layers and export the collapsed model.",
        description="Each --merge LO-HI (inclusive, 0-based, original indices) becomes one layer at LO.",
    )
    p.add_argument(
        "--model", default="default", help="model spec: default, Hub id, directory or .gguf"
    )
    p.add_argument(
        "--merge",
        action="append",
        required=True,
        metavar="LO-HI",
        help="range to merge; repeat for several",
    )
    p.add_argument(
        "--method",
        default="official",
        help=f"merge method: {', '.join(REGISTRY)} (default official)",
    )
    p.add_argument("--out", required=True, help="directory for the exported model")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    method = get_method(args.method)  # fail on a typo before loading anything
    ranges = parse_ranges(",".join(args.merge))
    validate_ranges(ranges, num_layers=2**31)  # LO > HI and overlaps: report before loading
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    before = count_params(lm.model)
    recipe = {"model": args.model, "method": method.name}
    collapsed, steps = collapse_any(lm.model, lm.tokenizer, ranges, method.name)
    if steps is not None:  # drop_lsq, drop_linear: fitted range by range on the training text
        recipe.update(fit_text="train_text", steps=steps)
    after = count_params(collapsed)
    plan = ", ".join(f"{lo}-{hi}" for lo, hi in sorted(ranges))
    print(
        f"Collapsed {args.model}: merged {plan} with '{method.name}' ({method.formula}); "
        f"layers {lm.num_layers} -> {num_layers(collapsed)}, "
        f"parameters {before:,} -> {after:,} ({100 * (after - before) / before:+.1f}%)."
    )
    try:
        result = export_model(
            collapsed,
            lm.tokenizer,
            args.out,
            recipe,
            original=lm.model,
        )
    except RuntimeError as e:
        raise LacoError(str(e)) from None
    print(
        f"Saved to {result.path}; reloaded with AutoModelForCausalLM.from_pretrained: "
        f"max |logit diff| {result.max_abs_logit_diff:.2e} (verified)."
    )
    return 0
