"""``laco rebuild``: rebuild the model a recipe describes, and export it verified."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..exchange.export import check_target
from ..loading.models import load_model
from ..pipeline import read_recipe, rebuild
from .common import add_out_args, export_measured

HELP = "Rebuild a model from a laco_recipe.json (or its export folder) and export it."
DESCRIPTION = (
    "Steps that carry their results (fitted tensors in laco_recipe.safetensors, "
    "a search's accepted merges, a pruning's removed groups, LoRA factors) replay exactly; "
    "others are recomputed from the calibration text the recipe records."
)


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="laco_recipe.json, or the folder holding it")
    p.add_argument("--dtype", default=None, help="override the recipe's dtype")
    p.add_argument("--device", default=None, help="override the recipe's device (e.g. cpu)")
    add_out_args(p)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    recipe = read_recipe(args.recipe)
    src = Path(args.recipe).expanduser()
    protect = [src if src.is_dir() else src.parent]
    check_target(args.out, args.overwrite, protect)

    def load(ref):
        return load_model(ref.spec, args.dtype or ref.dtype, args.device or ref.device)

    model, base, recipe = rebuild(recipe, load)
    out, quality = export_measured(model, base, recipe, args.out, args.overwrite, protect)
    print(f"Rebuilt {recipe.describe()} on {recipe.base.spec}: {out.path}, {quality}")
    return 0
