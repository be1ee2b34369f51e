"""``laco heal``: LoRA recovery of a collapsed or pruned model, ppl before/after on held-out text.

By default a model with a recipe is distilled from its base model on the training text plus the
base model's own samples, within a time budget, keeping the adapter that scores best on the
training texts' validation slice (``steps.heal``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..analysis.evaluate import perplexity
from ..arch.sharing import count_params
from ..assets import read_text
from ..errors import LacoError
from ..exchange.export import check_target
from ..heal import check_hyperparameters
from ..loading.limits import Limits
from ..params import add_arguments
from ..pipeline import base_ref, context, export, read_recipe
from ..recipe import RECIPE_FILE, Recipe, TextSource
from ..steps.heal import DEFAULTS, HEAL_PARAMS, SAMPLING_SHARE, check_budget, default_heal
from .common import add_model_args, add_out_args, load, positive, read_user_text, source_dirs

HELP = "LoRA fine-tune a (collapsed or pruned) model and merge the adapters."
DESCRIPTION = (
    "By default a model with a recipe is distilled from its base model (KL to the dense "
    "next-token distribution) on the training text plus continuations the dense model "
    "samples (cached per base model), within --seconds (sampling included), keeping "
    "the adapter that scores best on the training texts' validation slice."
)


def add_flags(p: argparse.ArgumentParser) -> None:
    add_model_args(p, default=None)
    p.add_argument(
        "--text",
        help="UTF-8 training text (default: the bundled training texts less their validation "
        "slice)",
    )
    p.add_argument("--eval-text", help="held-out text for perplexity (default: bundled eval text)")
    p.add_argument(
        "--steps",
        type=positive,
        default=None,
        help="LoRA steps at most (default: as many as the budget allows)",
    )
    add_arguments(p.add_argument_group("heal settings"), {"": HEAL_PARAMS}, "", typed=True)
    p.add_argument("--seq-len", type=positive, default=128)
    p.add_argument("--batch-size", type=positive, default=4)
    p.add_argument(
        "--teacher",
        help="dense model spec to distil from (default: the recipe's base model; 'none' trains "
        "on the LM loss); one extra forward per step",
    )
    add_out_args(p)


def settings(args: argparse.Namespace) -> dict:
    """The declared heal settings, given or default, each checked against its range."""
    check_budget(args.seconds)
    out = {}
    for d in HEAL_PARAMS:
        value = getattr(args, d.name)
        out[d.name] = DEFAULTS[d.name] if value is None else d.check(value, "heal")
    check_hyperparameters(args.steps or 1, out["rank"], out["lr"], args.seq_len, args.batch_size)
    return out


def run(args: argparse.Namespace) -> int:
    given = settings(args)
    limits = Limits.current()
    if args.steps is not None:
        limits.check("heal_steps", args.steps, "--steps")
    limits.check("seq_len", args.seq_len, "--seq-len")
    folder = Path(args.model).expanduser()
    recipe_here = (folder / RECIPE_FILE).is_file()
    teacher_spec = None if args.teacher == "none" else args.teacher
    if teacher_spec is None and args.teacher is None and recipe_here:
        teacher_spec = read_recipe(folder).base.spec
    if teacher_spec is None:
        if args.self_text:
            raise LacoError(
                f"--self-text {args.self_text} samples text from the dense model, and "
                f"{args.model} names none (no recipe): give --teacher MODEL or --self-text 0."
            )
        given["self_text"] = 0
    train = read_user_text(args.text, "Training text") if args.text else None
    held_out = read_user_text(args.eval_text, "Evaluation text") if args.eval_text else read_text()
    for text, flag in ((train, "--text"), (held_out, "--eval-text")):
        if text is not None:
            limits.check_text(text, flag)
    check_target(args.out, args.overwrite, source_dirs(args.model, teacher_spec))
    lm = load(args)
    recipe = read_recipe(folder) if recipe_here else Recipe(base_ref(lm))
    teacher = load(args, teacher_spec) if teacher_spec else None
    if teacher is not None and teacher.spec != recipe.base.spec:
        raise LacoError(
            f"--teacher {teacher_spec} is not this model's base ({recipe.base.spec}): a recipe "
            "distils from its base model; give --teacher " + recipe.base.spec + "."
        )
    before = perplexity(lm.model, lm.tokenizer, held_out)
    step = default_heal(
        given["seconds"],
        args.steps,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        teacher=teacher is not None,
        text=TextSource.of([train]) if train is not None else None,
        **{k: v for k, v in given.items() if k != "seconds"},
    )
    how = "distilled from " + teacher_spec if teacher is not None else "on the LM loss"
    print(f"Healing {args.model} {how} for at most {given['seconds']:g} s.", flush=True)
    ctx_base = teacher if teacher is not None else lm
    model, done = step.apply(lm.model, context(ctx_base, events=show, progress=progress))
    print(file=sys.stderr)
    after = perplexity(model, lm.tokenizer, held_out)
    recipe = recipe.then(done, params_after=count_params(model))
    out = export(model, lm, args.out, recipe, args.overwrite, source_dirs(args.model))
    res = done.result
    print(
        f"Kept the adapter of step {res.best_step} of {len(res.losses)} (best validation "
        f"perplexity {min(p for _, p in res.curve):.3f})."
    )
    print(
        f"Healed {args.model}: {len(res.losses)} LoRA steps (r={done.rank}) in {res.seconds:.0f} s"
        f", loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; held-out perplexity "
        f"{before:.2f} -> {after:.2f}. Saved to {out.path}."
    )
    return 0


def progress(fraction: float, desc: str) -> None:
    print(f"\r{desc}", end="", file=sys.stderr, flush=True)


def show(event: dict) -> None:
    """The sampling and the validation curve, as they happen."""
    if "samples" in event:
        n, cached = event["samples"], event["cached"]
        how = {0: "sampled from the dense model", n: "read from the cache"}.get(
            cached, f"({cached} read from the cache, {n - cached} sampled from the dense model)"
        )
        print(f"\n{n} continuations {how} in {event['seconds']:.1f} s.", flush=True)
        budget, asked = event.get("budget"), event.get("asked", n)
        if n < asked:
            print(
                f"WARNING: sampling stopped at {100 * SAMPLING_SHARE:.0f} % of the {budget:g} s "
                f"budget after {n} of {asked} continuations; the rest of the budget trains. They are "
                "cached: the next heal of a model of this base continues from them (or give "
                "--self-text 0).",
                flush=True,
            )
        elif budget and cached < n and event["seconds"] >= SAMPLING_SHARE * budget:
            print(
                f"WARNING: sampling took {event['seconds']:.0f} s of the {budget:g} s budget, "
                "leaving little to train. The samples are cached now: a second heal of a model "
                "of this base trains for its whole budget (or give --self-text 0).",
                flush=True,
            )
    elif "valid_step" in event:
        best = "  (best)" if event["best"] else ""
        print(
            f"\n  validation at step {event['valid_step']:>4}: perplexity "
            f"{event['valid_ppl']:.3f}{best}",
            file=sys.stdout,
            flush=True,
        )
