"""``laco auto``: automatic collapse searches, with a JSON decision log and a verified export."""

from __future__ import annotations

import argparse

from ..arch.plan import format_plan
from ..errors import LacoError
from ..exchange.export import check_target
from ..loading.limits import Limits
from ..params import add_arguments, collect, given_but_unused, validate
from ..pipeline import context, export
from ..pipeline import run as run_steps
from ..presets import best_collapse, refit_source
from ..recipe import Step, TextSource
from ..registry import REGISTRY
from ..search.config import (
    RUN_PARAMS,
    SEARCH_PARAMS,
    TARGETS,
    SearchConfig,
    describe_size,
    size_report,
)
from ..search.curve import cliff_line, validation_source
from ..steps.heal import default_heal
from ..steps.search import SearchStep
from .collapse import kv_line, method_params
from .common import (
    add_model_args,
    add_out_args,
    check_output_file,
    export_measured,
    load,
    positive,
    read_prompt_file,
    source_dirs,
    write_curve,
    write_json,
)

HELP = "Search a collapse plan automatically (LaCo Algorithm 1, greedy, or a target size)."
DESCRIPTION = (
    "With only --target-ratio R (or --target-layers N): the best pipeline this project "
    "knows (a greedy KL search of layer drops on the training text's paragraphs, then "
    "each kept layer's MLP refitted by least squares), an ordinary checkpoint. Without "
    "a target: LaCo Algorithm 1 as the official code runs it (accept a merge of C "
    "layers when the score against the dense model exceeds T). Any search flag below "
    "(--strategy, --objective, --method, -C, -T…) runs that search instead, e.g. "
    "--strategy paper for Algorithm 1 down to a target. Scores are in (0, 1]."
)


def add_flags(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_arguments(p.add_argument_group("search settings"), {"": SEARCH_PARAMS}, "", True)
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--target-ratio",
        type=float,
        help="fraction of ALL parameters to remove (the papers' convention; the embedding "
        "counts, so on an embedding-heavy model this means many layers)",
    )
    target.add_argument("--target-layers", type=int, help="number of layers to remove")
    target.add_argument(
        "--target-block-ratio",
        type=float,
        help="fraction of the transformer layers' parameters to remove (embedding and LM head "
        "excluded): the same depth on every model",
    )
    target.add_argument(
        "--max-ppl-ratio",
        type=float,
        metavar="Q",
        help="quality budget: the smallest model whose validation perplexity (training texts' "
        "validation slice, after the refit) stays within Q x dense; exit 2 if no plan does",
    )
    target.add_argument(
        "--max-kl",
        type=float,
        metavar="K",
        help="quality budget as a mean KL(dense || model) in nats per token on the validation "
        "slice",
    )
    p.add_argument(
        "--objective",
        choices=list(REGISTRY.objectives),
        help="score: " + "; ".join(f"{n}: {o.summary}" for n, o in REGISTRY.objectives.items()),
    )
    p.add_argument(
        "--strategy",
        choices=list(REGISTRY.strategies),
        help="search strategy: "
        + "; ".join(f"{n}: {x.summary}" for n, x in REGISTRY.strategies.items()),
    )
    p.add_argument(
        "--method", choices=list(REGISTRY.methods), help="merge method (default official)"
    )
    add_arguments(
        p.add_argument_group("strategy settings"), REGISTRY.strategy_params(), STRATEGY_PREFIX
    )
    add_arguments(
        p.add_argument_group("objective settings"), REGISTRY.objective_params(), OBJECTIVE_PREFIX
    )
    add_arguments(p.add_argument_group("method parameters"), REGISTRY.method_params())
    p.add_argument(
        "--prompts", help="UTF-8 file, one calibration prompt per line (default: bundled prompts)"
    )
    p.add_argument(
        "--max-prompts", type=positive, metavar="N", help="calibrate on the first N texts only"
    )
    p.add_argument(
        "--paragraphs",
        action="store_true",
        help="calibrate on the paragraphs of --prompts FILE (default: of the bundled training "
        "text) instead of one prompt per line",
    )
    p.add_argument(
        "--fit-maps",
        "--refit",
        dest="refit",
        nargs="?",
        const="drop_lsq",
        default=None,
        metavar="METHOD",
        help="after the search, refit the plan with a fitted method on the paragraphs of both "
        "bundled training texts: drop_lsq (default) or drop_linear",
    )
    p.add_argument(
        "--units",
        choices=("layers", "blocks"),
        help="'blocks' also removes single layers' attention sub-blocks (BlockPruner / "
        "LLM-Drop; strategies: "
        + ", ".join(n for n, x in REGISTRY.strategies.items() if "blocks" in x.units)
        + "); the export then loads with `from laco_core import load_pruned`",
    )
    p.add_argument(
        "--early-exit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=RUN_PARAMS[0].help,
    )
    p.add_argument("--workers", type=positive, default=None, help="candidates scored at once")
    p.add_argument("--batch-size", type=positive, help="prompts per forward chunk (default 4)")
    p.add_argument("--json", dest="json_log", metavar="LOG", help="write the decision log as JSON")
    p.add_argument(
        "--heal-seconds",
        type=float,
        metavar="S",
        help="then heal for S seconds (the default heal: distilled from the dense model on the "
        "training text and its own samples, validation stop); recorded in the recipe",
    )
    add_out_args(p, required=False)
    p.add_argument("--quiet", "-q", action="store_true", help="do not print every candidate")


STRATEGY_PREFIX, OBJECTIVE_PREFIX = "strategy_", "objective_"
# flags that describe a search (with the search settings and the strategies' and methods'
# own): giving any of them runs that search rather than the best pipeline (--units does not:
# with a bare target it widens the best pipeline's units)
SEARCH_FLAGS = (
    "objective",
    "strategy",
    "method",
    "refit",
    "prompts",
    "paragraphs",
    "max_prompts",
    "batch_size",
)


def targets_of(args: argparse.Namespace) -> dict:
    """The size target or quality budget given (``SearchConfig`` field -> value)."""
    return {k: getattr(args, k) for k in TARGETS if getattr(args, k) is not None}


def wants_best(args: argparse.Namespace) -> bool:
    """True for a target with no search flag: the best pipeline (``presets.best_collapse``)."""
    target = bool(targets_of(args))
    flags = any(getattr(args, k) not in (None, False) for k in SEARCH_FLAGS)
    settings = any(getattr(args, d.name) is not None for d in SEARCH_PARAMS)
    prefixes = ("param_", STRATEGY_PREFIX, OBJECTIVE_PREFIX)
    params = any(k.startswith(prefixes) and v is not None for k, v in vars(args).items())
    return target and not flags and not settings and not params


def config_of(args: argparse.Namespace) -> SearchConfig:
    """The search configuration the flags describe (unset flags take the declared defaults:
    LaCo Algorithm 1 as the paper runs it)."""
    strategy = REGISTRY.strategy(args.strategy or "paper")
    objective = REGISTRY.objective(args.objective or "cosine")
    for chosen, table, prefix in (
        (strategy, REGISTRY.strategy_params(), STRATEGY_PREFIX),
        (objective, REGISTRY.objective_params(), OBJECTIVE_PREFIX),
    ):
        every = [d for defs in table.values() for d in defs]
        extra = given_but_unused(args, every, chosen.params, prefix)
        if extra:
            raise LacoError(f"{', '.join(extra)} does not apply to {chosen.name}.")
    method = args.method or "official"
    params, *refit = method_params(args, method, args.refit)
    common = {d.name: getattr(args, d.name) for d in SEARCH_PARAMS}
    return SearchConfig(
        **{k: v for k, v in common.items() if v is not None},
        method=method,
        objective=objective.name,
        strategy=strategy.name,
        **targets_of(args),
        method_params=params,
        strategy_params=validate(
            strategy.params, collect(args, strategy.params, STRATEGY_PREFIX), strategy.name
        ),
        objective_params=validate(
            objective.params, collect(args, objective.params, OBJECTIVE_PREFIX), objective.name
        ),
        early_exit=args.early_exit,
        workers=args.workers,
        batch_size=args.batch_size or 4,
        refit=args.refit,
        refit_params=refit[0] if refit else {},
        units=args.units or "layers",
    )


def steps_of(args: argparse.Namespace) -> list[Step]:
    """The best pipeline for a bare target, else the search the flags describe; then the
    default heal with ``--heal-seconds``."""
    if wants_best(args):  # --units blocks: the same pipeline, attention sub-blocks as units too
        steps = best_collapse(**targets_of(args), heal_seconds=args.heal_seconds)
        steps[0].config.units = args.units or "layers"
        return steps
    heal = [default_heal(args.heal_seconds)] if args.heal_seconds is not None else []
    cfg = config_of(args)
    if cfg.refit and not REGISTRY.method(cfg.refit).fitted:
        raise LacoError(f"--fit-maps {cfg.refit}: {REGISTRY.fitted_choice()}.")
    texts = read_prompt_file(args.prompts, args.paragraphs)[: args.max_prompts]
    asset = None
    if not args.prompts:
        asset = "train_paragraphs" if args.paragraphs else "calibration_prompts"
    refit_cal = refit_source() if cfg.refit else None
    valid = validation_source() if cfg.budget else None
    return [SearchStep(cfg, TextSource.of(texts, asset, args.max_prompts), refit_cal, valid), *heal]


def run(args: argparse.Namespace) -> int:
    best = wants_best(args)
    step, *healing = steps_of(args)
    cfg = step.config
    cfg.early_exit, cfg.workers = args.early_exit, args.workers
    log_file = check_output_file(args.json_log, "--json")
    if args.out:
        check_target(args.out, args.overwrite, source_dirs(args.model))
    lm = load(args)
    cfg.validate(lm.num_layers)
    texts = step.calibration.resolve()
    Limits.current().check_prompts(lm.tokenizer, texts)

    def show(event: dict) -> None:
        if not args.quiet and "lo" in event and not event.get("pending"):
            mark = "accept" if event["accepted"] else "reject"
            alpha = f" alpha={event['alpha']:.3f}" if "alpha" in event else ""
            print(
                f"  {event['lo']:>3}-{event['hi']:<3} score {event['score']:.4f} {mark}{alpha}",
                flush=True,
            )

    how = f"{cfg.strategy}, {cfg.objective}, {cfg.method}" + (
        f", refit {cfg.refit}" if cfg.refit else ""
    )
    print(f"Searching {args.model} ({lm.num_layers} layers) on {len(texts)} texts: {how}")
    if best:
        print(
            "(the best pipeline; --strategy paper runs LaCo Algorithm 1 to the same target)",
            flush=True,
        )
    model, recipe = run_steps(lm, [step, *healing], context(lm, events=show))
    res = recipe.steps[0].result
    plan = format_plan(res.plan) or "(none)"
    info = recipe.info
    print(
        f"Plan (original indices): {plan}; layers {info['layers_before']} -> "
        f"{info['layers_after']}, parameters {info['params_before']:,} -> "
        f"{info['params_after']:,} in {res.seconds:.1f} s."
    )
    print(f"Size: {describe_size(size_report(model, lm.model))}.")
    quality = report_curve(res.curve, cfg)
    if cfg.refit and res.plan:
        print(f"Refitted each kept layer with {cfg.refit} on both training texts' paragraphs.")
    if healing:
        print(heal_line(recipe.steps[-1]))
    print(f"Recipe: {recipe.describe()}")
    print(kv_line(info))
    write_json(log_file, res.log())
    if log_file:
        print(f"Decision log written to {args.json_log}")
    if args.out:
        if not res.plan:
            raise LacoError(
                "The search accepted no merge, so there is nothing to export: lower --threshold "
                "or set a target."
            )
        protect = source_dirs(args.model)
        if res.curve is None:  # a search without a curve (paper, evo) is measured once here
            _, line = export_measured(model, lm, recipe, args.out, args.overwrite, protect)
            print(f"Exported to {args.out}: {line}")
        else:
            out = export(model, lm, args.out, recipe, args.overwrite, protect)
            print(
                f"Exported to {args.out}: reload-verified (max |logit diff| "
                f"{out.max_abs_logit_diff:.2e}){quality}."
            )
        if res.curve is not None:
            written = write_curve(res.curve, args.out)
            print(f"Size–quality curve written to {', '.join(written)}")
    if res.curve is not None and (loud := cliff_line(res.curve.points[-1].ratio)):
        print(loud, flush=True)
    return 0


def heal_line(done) -> str:
    """The heal step's validation curve and the step it kept, on one line."""
    res = done.result
    curve = ", ".join(f"{s}: {p:.3f}" for s, p in res.curve)
    return (
        f"Healed {len(res.losses)} LoRA steps in {res.seconds:.0f} s; validation perplexity by "
        f"step {curve}; kept step {res.best_step}."
    )


def report_curve(curve, cfg: SearchConfig) -> str:
    """Print the walk's size–quality curve; returns the final quality as a clause."""
    if curve is None or not curve.points:
        return ""
    print(f"Validation ({curve.text}, dense perplexity {curve.dense_ppl:.2f}):")
    for p in curve.points:
        after = "" if p.ppl_ratio_refit is None else f", refitted {p.ppl_ratio_refit:.3f}x"
        print(f"  {p.layers_removed:>3} layers removed: perplexity {p.ppl_ratio:.3f}x{after}")
    last = curve.points[-1]
    knee = curve.knee()
    if knee is not None and last.layers_removed > knee and cfg.sized:
        print(
            f"The curve bends at {knee} layers removed: the target lies past its knee "
            "(each layer beyond it costs more than the ones before)."
        )
    if cfg.budget:
        kept = max((p for p in curve.points if curve.within(p)), key=lambda p: p.layers_removed)
        print(
            f"Within the budget: {kept.layers_removed} layers removed "
            f"({kept.ratio:.3f}x dense validation perplexity)."
        )
        return f", validation perplexity {kept.ratio:.2f}x dense"
    return f", validation perplexity {last.ratio:.2f}x dense"
