"""``laco lens``: the logit lens of a model, and of a collapsed one beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LacoError
from ..registry import REGISTRY
from .common import add_model_args, check_output_file, load, write_json

HELP = "What each layer would predict (logit lens), dense beside collapsed."
DESCRIPTION = (
    "Each layer's output goes through the final norm and the LM head. With "
    "--compare (a recipe or an export folder built from --model) or --merge, the collapsed "
    "model's layers are set beside the dense model's at the same original depth, with "
    "KL(dense || collapsed) and top-1 agreement per layer: where they part is where the "
    "collapse changed the computation."
)


def add_flags(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--prompt", required=True, help="the text to read (at most 64 tokens)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--compare", metavar="RECIPE", help="laco_recipe.json or its folder")
    which.add_argument("--merge", metavar="LO-HI", help="collapse these ranges on the fly")
    p.add_argument("--method", choices=list(REGISTRY.methods), default="drop", help="with --merge")
    p.add_argument("--top-k", type=int, default=5, help="tokens listed per layer (1-50)")
    p.add_argument("--json", dest="json_out", help="write the lens as JSON")
    p.add_argument("--png", dest="png_out", help="write the picture as PNG (needs matplotlib)")


def collapsed_model(args: argparse.Namespace, lm):
    """The model to set beside the dense one: rebuilt from a recipe, or collapsed here."""
    from ..ops import build_collapsed
    from ..pipeline import read_recipe, rebuild

    if args.merge:
        return build_collapsed(lm.model, args.merge, args.method)
    if args.compare:
        recipe = read_recipe(args.compare)
        model, _, _ = rebuild(recipe, lambda ref: lm)
        return model
    return None


def run(args: argparse.Namespace) -> int:
    from ..analysis.lens import logit_lens

    json_file = check_output_file(args.json_out, "--json")
    png_file = check_output_file(args.png_out, "--png")
    lm = load(args)
    view = logit_lens(lm.model, lm.tokenizer, args.prompt, collapsed_model(args, lm), args.top_k)
    print(f"Prompt read as {len(view.tokens)} tokens; next token after it, per layer:")
    by_end = {r.layers[1]: r for r in view.collapsed}
    for i, d in enumerate(view.dense):
        line = f"  layer {i:>3}: {_tok(d.last[0])}"
        if view.collapsed:
            c = by_end.get(i)
            kl = view.kl[i]
            line += (
                "   collapsed: (merged away)"
                if c is None
                else f"   collapsed {_span(c.layers)}: {_tok(c.last[0])}  KL {kl:.3f}, "
                f"top-1 agrees at {view.agree[i]:.0%} of positions"
            )
        print(line)
    write_json(json_file, {"prompt": args.prompt, **view.to_dict()})
    if json_file:
        print(f"Lens written to {json_file}")
    if png_file:
        draw(view, png_file)
        print(f"Picture written to {png_file}")
    return 0


def _tok(t) -> str:
    return f"{t[0]!r} {t[1]:.2f}"


def _span(layers) -> str:
    lo, hi = layers
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def draw(view, path: Path) -> None:
    """Top-1 probability per (layer, position), dense and collapsed, with KL per layer."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        raise LacoError("--png needs matplotlib (pip install matplotlib).") from None
    n, t = len(view.dense), len(view.tokens)
    grids = [np.array([[p for _, p in r.top1] for r in view.dense])]
    if view.collapsed:
        grid = np.full((n, t), np.nan)
        for r in view.collapsed:
            grid[r.layers[1]] = [p for _, p in r.top1]
        grids.append(grid)
    cols = len(grids) + (1 if view.collapsed else 0)
    fig, axes = plt.subplots(1, cols, figsize=(4 + 3.5 * cols, 1.5 + 0.22 * n), dpi=110)
    axes = np.atleast_1d(axes)
    for ax, grid, title in zip(axes, grids, ["original", "collapsed"], strict=False):
        ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{title}: top-1 probability")
        ax.set_xlabel("position")
        ax.set_ylabel("original layer")
        ax.set_xticks(
            range(t), [s.strip()[:6] or "·" for s in view.tokens], rotation=90, fontsize=6
        )
        for lo, hi in view.merged:
            ax.axhspan(lo - 0.5, hi - 0.5, color="white", alpha=0.35, lw=0)
    if view.collapsed:
        ax = axes[-1]
        ax.barh(range(n), [k if k is not None else 0 for k in view.kl], color="C3")
        ax.set_ylim(-0.5, n - 0.5)
        ax.set_title("KL(original ‖ collapsed)")
        ax.set_xlabel("nats per position")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
