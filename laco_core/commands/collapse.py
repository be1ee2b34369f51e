"""``laco collapse``: merge layer ranges of a model and export the result, verified."""

from __future__ import annotations

import argparse

from ..arch.plan import format_plan, parse_ranges, validate_ranges
from ..errors import LacoError
from ..exchange.export import check_target
from ..params import add_arguments, collect, given_but_unused
from ..pipeline import run as run_steps
from ..prune.io import SHAPES_SIDECAR
from ..registry import REGISTRY
from ..steps.attention import AttentionStep
from ..steps.collapse import CollapseStep
from .common import (
    add_model_args,
    add_out_args,
    export_measured,
    load,
    source_dirs,
)

HELP = "Merge layer ranges into single layers and export the collapsed model."
DESCRIPTION = (
    "Each --merge LO-HI (inclusive, 0-based, original indices) becomes one "
    "layer at LO. Fitted methods (drop_lsq, drop_linear) are fitted on the bundled "
    "training text's paragraphs, range by range."
)


def add_flags(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="LO-HI",
        help="range to merge; repeat for several",
    )
    p.add_argument(
        "--drop-attn",
        metavar="I,J,...",
        help="also remove the attention sub-block of these layers (original indices; their "
        "MLPs stay). The export then needs `from laco_core import load_pruned` to load",
    )
    p.add_argument(
        "--method",
        default="official",
        choices=list(REGISTRY.methods),
        help="merge method (default official)",
    )
    add_arguments(p.add_argument_group("method parameters"), REGISTRY.method_params())
    add_out_args(p)


def parse_layers(text: str | None) -> list[int]:
    """``"12,14"`` -> ``[12, 14]`` (empty for None)."""
    if not text:
        return []
    try:
        out = sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise LacoError(
            f"Cannot read layers '{text}': write them as I,J,..., e.g. 12,14."
        ) from None
    if any(i < 0 for i in out):
        raise LacoError(f"Layers '{text}' must be 0 or more.")
    return out


def kv_line(info: dict) -> str:
    """The KV cache a model keeps, per token, against its base."""
    before, after = info.get("kv_cache_layers", [0, 0])
    saved = 100 * (1 - after / before) if before else 0.0
    return f"KV cache: {after} of {before} layers keep attention ({saved:.0f}% smaller per token)."


def method_params(args: argparse.Namespace, *names: str | None) -> list[dict]:
    """Per method named, the ``--<param>`` flags it declares; a flag none of them declares is
    refused with the methods it would apply to."""
    methods = [REGISTRY.method(n) for n in names if n]
    every = [d for defs in REGISTRY.method_params().values() for d in defs]
    used = [d for m in methods for d in m.params]
    extra = given_but_unused(args, every, used)
    if extra:
        chosen = " and ".join(m.name for m in methods)
        raise LacoError(f"{', '.join(extra)} does not apply to {chosen}.")
    return [m.check(collect(args, m.params)) for m in methods]


def run(args: argparse.Namespace) -> int:
    (params,) = method_params(args, args.method)
    attn = parse_layers(args.drop_attn)
    if not args.merge and not attn:
        raise LacoError("Give at least one --merge LO-HI (or --drop-attn layers).")
    ranges = validate_ranges(parse_ranges(",".join(args.merge)), None) if args.merge else []
    check_target(args.out, args.overwrite, source_dirs(args.model))
    lm = load(args)
    steps = [AttentionStep(attn)] if attn else []
    if ranges:
        ranges = validate_ranges(ranges, lm.num_layers)
        steps.append(CollapseStep([list(r) for r in ranges], args.method, params))
    model, recipe = run_steps(lm, steps)
    info = recipe.info
    method = REGISTRY.method(args.method)
    merged = f"merged {format_plan(ranges)} with '{args.method}' ({method.formula})"
    print(
        f"Collapsed {args.model}: {merged if ranges else 'no merge'}"
        + (f", attention removed in layers {', '.join(map(str, attn))}" if attn else "")
        + f"; layers {info['layers_before']} -> {info['layers_after']}, "
        f"parameters {info['params_before']:,} -> {info['params_after']:,} "
        f"({100 * (info['params_after'] / info['params_before'] - 1):+.1f}%)."
    )
    print(kv_line(info))
    result, quality = export_measured(
        model, lm, recipe, args.out, args.overwrite, source_dirs(args.model)
    )
    loader = (
        "laco_core.load_pruned (per-layer shapes)"
        if (result.path / SHAPES_SIDECAR).exists()
        else "AutoModelForCausalLM.from_pretrained"
    )
    print(f"Saved to {result.path}; reloaded with {loader}: {quality}")
    return 0
