"""``laco heal``: LoRA recovery of a collapsed or pruned model, ppl before/after on held-out text."""

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
from ..pipeline import base_ref, context, export, read_recipe
from ..recipe import RECIPE_FILE, Recipe, TextSource
from ..steps.heal import HealStep
from .common import add_model_args, add_out_args, load, positive, read_user_text, source_dirs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heal", help="LoRA fine-tune a (collapsed or pruned) model and merge the adapters."
    )
    add_model_args(p, default=None)
    p.add_argument(
        "--text",
        help="UTF-8 training text (default: bundled assets/train_text.txt + train_more.txt)",
    )
    p.add_argument("--eval-text", help="held-out text for perplexity (default: bundled eval text)")
    p.add_argument("--steps", type=positive, default=60, help="LoRA steps (at most)")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="a time budget: stop after the step that crosses it (the recipe records the steps)",
    )
    p.add_argument("--rank", type=positive, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seq-len", type=positive, default=128)
    p.add_argument("--batch-size", type=positive, default=4)
    p.add_argument(
        "--teacher",
        help="dense model spec to distil from (e.g. default): KL to its next-token "
        "distribution instead of the LM loss; one extra forward per step",
    )
    p.add_argument(
        "--self-text",
        type=int,
        default=0,
        metavar="N",
        help="with --teacher: add N continuations sampled from the teacher to the training text",
    )
    add_out_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_hyperparameters(args.steps, args.rank, args.lr, args.seq_len, args.batch_size)
    if args.seconds is not None and not args.seconds > 0:
        raise LacoError("--seconds is a time budget in seconds, more than 0.")
    if args.self_text < 0 or (args.self_text and not args.teacher):
        raise LacoError("--self-text N samples text from the teacher: give --teacher and N >= 0.")
    limits = Limits.current()
    limits.check("heal_steps", args.steps, "--steps")
    limits.check("seq_len", args.seq_len, "--seq-len")
    train = read_user_text(args.text, "Training text") if args.text else None
    held_out = read_user_text(args.eval_text, "Evaluation text") if args.eval_text else read_text()
    for text, flag in ((train, "--text"), (held_out, "--eval-text")):
        if text is not None:
            limits.check_text(text, flag)
    check_target(args.out, args.overwrite, source_dirs(args.model, args.teacher))
    lm = load(args)
    folder = Path(args.model).expanduser()
    recipe = read_recipe(folder) if (folder / RECIPE_FILE).is_file() else Recipe(base_ref(lm))
    teacher = load(args, args.teacher) if args.teacher else None
    if teacher is not None and teacher.spec != recipe.base.spec:
        raise LacoError(
            f"--teacher {args.teacher} is not this model's base ({recipe.base.spec}): a recipe "
            "distils from its base model; give --teacher " + recipe.base.spec + "."
        )
    before = perplexity(lm.model, lm.tokenizer, held_out)

    def progress(fraction: float, desc: str) -> None:
        print(f"\r{desc}", end="", file=sys.stderr, flush=True)

    text = TextSource.of([train]) if train is not None else None
    step = HealStep(
        args.steps,
        args.rank,
        args.lr,
        args.seq_len,
        args.batch_size,
        teacher=teacher is not None,
        self_text=args.self_text,
        seconds=args.seconds,
        text=text,
    )
    ctx_base = teacher if teacher is not None else lm
    model, done = step.apply(lm.model, context(ctx_base, progress=progress))
    print(file=sys.stderr)
    after = perplexity(model, lm.tokenizer, held_out)
    recipe = recipe.then(done, params_after=count_params(model))
    out = export(model, lm, args.out, recipe, args.overwrite, source_dirs(args.model))
    res = done.result
    print(
        f"Healed {args.model}: {len(res.losses)} LoRA steps (r={args.rank}) in {res.seconds:.0f} s, "
        f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; held-out perplexity "
        f"{before:.2f} -> {after:.2f}. Saved to {out.path}."
    )
    return 0
