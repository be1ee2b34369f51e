"""``laco auto``: LaCo Algorithm 1 and target-driven searches, with a JSON decision log."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..assets import read_paragraphs, read_prompts
from ..errors import LacoError
from ..merge import get_method
from ..methods import REGISTRY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "auto",
        help="Search a collapse plan automatically (LaCo Algorithm 1, greedy, or a target size).",
        description=(
            "Without a target: LaCo Algorithm 1 as the official code runs it (accept a merge of "
            "C layers when the score against the dense model exceeds T). With --target-layers or "
            "--target-ratio the search runs until that many layers / that fraction of the "
            "parameters is removed. Scores are in (0, 1], higher is better."
        ),
    )
    p.add_argument(
        "--model", default="default", help="model spec: default, Hub id, directory or .gguf"
    )
    p.add_argument(
        "--merge-count", "-C", type=int, default=4, help="layers per merge, C (default 4)"
    )
    p.add_argument(
        "--low", "-L", type=int, default=1, help="lowest layer a merge may start at, L (default 1)"
    )
    p.add_argument(
        "--high",
        "-H",
        type=int,
        default=None,
        help="loop starts at H - C (default: number of layers)",
    )
    p.add_argument(
        "--interval", "-I", type=int, default=2, help="jump after an accepted merge, I (default 2)"
    )
    p.add_argument(
        "--threshold", "-T", type=float, default=0.65, help="accept when score > T (default 0.65)"
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--target-ratio", type=float, help="fraction of parameters to remove, e.g. 0.2"
    )
    target.add_argument("--target-layers", type=int, help="number of layers to remove")
    p.add_argument(
        "--objective",
        default="cosine",
        choices=("cosine", "kl", "ppl"),
        help="score (default cosine, the paper's)",
    )
    p.add_argument(
        "--strategy",
        default="paper",
        choices=("paper", "greedy"),
        help="paper: Algorithm 1 scan; greedy: best range each step",
    )
    p.add_argument(
        "--method",
        default="official",
        help=f"merge method: {', '.join(REGISTRY)} (default official)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="fixed α for rdsc_calibrated (default: chosen per merge)",
    )
    p.add_argument(
        "--prompts", help="UTF-8 file, one calibration prompt per line (default: bundled prompts)"
    )
    p.add_argument(
        "--max-prompts",
        type=int,
        default=None,
        metavar="N",
        help="calibrate on the first N prompts (or paragraphs) only: fewer tokens, faster search",
    )
    p.add_argument(
        "--paragraphs",
        action="store_true",
        help="calibrate on the paragraphs of --prompts FILE (default: of the bundled training "
        "text) instead of one prompt per line: more tokens for drop_linear's fitted map",
    )
    p.add_argument(
        "--fit-maps",
        nargs="?",
        const="drop_lsq",
        default=None,
        metavar="METHOD",
        help="method drop: after the search, fit a least-squares correction into each kept "
        "layer on the bundled training text's paragraphs: drop_lsq (default; refits the MLP "
        "down projection) or drop_linear (ReplaceMe's map on the MLP output)",
    )
    p.add_argument(
        "--ridge",
        type=float,
        default=None,
        help="drop_linear: fixed ridge of the fitted map (default: cross-validated per fit)",
    )
    p.add_argument(
        "--correct",
        action="store_true",
        help="rdsc_calibrated: also fit a per-channel scale of the merged MLP output on the prompts",
    )
    p.add_argument(
        "--lazy", action="store_true", help="greedy: re-score ranges lazily (far fewer forwards)"
    )
    p.add_argument(
        "--early-exit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="paper strategy, cosine/kl: stop scoring a candidate once its decision is certain "
        "(default on; decisions never change, the log then shows a partial score)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="candidates scored side by side, one CPU thread each (default: torch threads)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="prompts packed per forward chunk, the early exit's step (default 4)",
    )
    p.add_argument("--json", dest="json_log", metavar="LOG", help="write the decision log as JSON")
    p.add_argument("--out", help="export the collapsed model to this directory")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--quiet", "-q", action="store_true", help="do not print every candidate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..models import load_model
    from ..search import SearchConfig, run_search

    hf_logging.disable_progress_bar()
    get_method(args.method)  # fail on a typo before loading anything
    if args.fit_maps and args.method != "drop":
        raise LacoError(
            "--fit-maps fits maps for a plan of plain drops: use it with --method drop."
        )
    if args.fit_maps and not get_method(args.fit_maps).fitted:
        raise LacoError(
            f"--fit-maps {args.fit_maps}: choose a fitted method, drop_lsq or drop_linear."
        )
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise LacoError(
                f"Prompt file '{path}' not found: give a UTF-8 file with one prompt per line."
            )
        try:
            prompts = read_paragraphs(path) if args.paragraphs else read_prompts(path)
        except UnicodeDecodeError as e:
            raise LacoError(f"Prompt file '{path}' is not UTF-8 text.") from e
    else:
        prompts = read_paragraphs() if args.paragraphs else read_prompts()
    if args.max_prompts is not None:
        if args.max_prompts < 1:
            raise LacoError("--max-prompts must be at least 1.")
        prompts = prompts[: args.max_prompts]
    if not prompts:
        raise LacoError("No calibration prompts: the prompt file has no non-empty line.")
    params = {} if args.alpha is None else {"alpha": args.alpha}
    if args.ridge is not None:
        params["ridge"] = args.ridge
    cfg = SearchConfig(
        merge_count=args.merge_count,
        low=args.low,
        high=args.high,
        interval=args.interval,
        threshold=args.threshold,
        method=args.method,
        objective=args.objective,
        strategy=args.strategy,
        target_layers=args.target_layers,
        target_ratio=args.target_ratio,
        method_params=params,
        early_exit=args.early_exit,
        workers=args.workers,
        batch_size=args.batch_size,
        correct=args.correct,
        lazy=args.lazy,
    )
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    cfg.validate(lm.num_layers)

    def show(event: dict) -> None:
        if not args.quiet:
            mark = "accept" if event["accepted"] else "reject"
            alpha = f" alpha={event['alpha']:.3f}" if "alpha" in event else ""
            print(
                f"  {event['lo']:>3}-{event['hi']:<3} score {event['score']:.4f} {mark}{alpha}",
                flush=True,
            )

    print(
        f"Searching {args.model} ({lm.num_layers} layers) on {len(prompts)} prompts: {cfg.strategy}, {cfg.objective}, {cfg.method}"
    )
    res = run_search(lm.model, lm.tokenizer, prompts, cfg, callback=show)
    plan = ", ".join(f"{lo}-{hi}" for lo, hi in res.plan) or "(none)"
    print(
        f"Plan (original indices): {plan}; layers {lm.num_layers} -> {lm.num_layers - res.layers_removed}, "
        f"parameters {res.params_before:,} -> {res.params_after:,} "
        f"({100 * (res.params_after - res.params_before) / res.params_before:+.1f}%) in {res.seconds:.1f} s."
    )
    model, recipe = res.model, res.recipe()
    if args.fit_maps and res.plan:
        from ..search.correction import fit_collapse

        model, steps = fit_collapse(
            lm.model,
            lm.tokenizer,
            read_paragraphs(),
            res.plan,
            params.get("ridge", "auto"),
            method=args.fit_maps,
        )
        recipe = {**recipe, "method": args.fit_maps, "steps": steps, "fit_text": "train_text"}
        print(
            f"Fitted a least-squares correction into each of {len(steps)} kept layers ({args.fit_maps})."
        )
    if args.json_log:
        Path(args.json_log).write_text(json.dumps(res.log(), indent=2) + "\n", encoding="utf-8")
        print(f"Decision log written to {args.json_log}")
    if args.out:
        if not res.plan:
            raise LacoError(
                "The search accepted no merge, so there is nothing to export: lower --threshold or set a target."
            )
        from ..export import export_model

        recipe = {**recipe, "model": args.model}
        out = export_model(model, lm.tokenizer, args.out, recipe, original=lm.model)
        print(
            f"Exported to {args.out} (reload check: max |logit diff| {out.max_abs_logit_diff:.2e})"
        )
    return 0
