"""``laco heal``: LoRA recovery of a collapsed or pruned model, ppl before/after on held-out text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import LacoError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heal", help="LoRA fine-tune a (collapsed or pruned) model and merge the adapters."
    )
    p.add_argument(
        "--model", required=True, help="model spec, typically a directory from collapse/prune"
    )
    p.add_argument("--text", help="UTF-8 training text (default: bundled assets/train_text.txt)")
    p.add_argument(
        "--dataset", help="Hugging Face dataset name with a 'text' column (needs `datasets`)"
    )
    p.add_argument("--eval-text", help="held-out text for perplexity (default: bundled eval text)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
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
        help="with --teacher: add N continuations sampled from the teacher to the training "
        "text (more in-distribution tokens for distillation, no download)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def _read(path: str) -> str:
    f = Path(path).expanduser()
    if not f.is_file():
        raise LacoError(f"Text file not found: {path}")
    return f.read_text(encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..assets import read_text
    from ..evaluate import perplexity
    from ..export import export_model
    from ..heal import heal
    from ..models import load_model, read_recipe
    from ..prune import is_pruned, save_pruned

    hf_logging.disable_progress_bar()
    if args.self_text < 0 or (args.self_text and not args.teacher):
        raise LacoError("--self-text N samples text from the teacher: give --teacher and N >= 0.")
    train = _read(args.text) if args.text else None
    held_out = _read(args.eval_text) if args.eval_text else read_text()
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    before = perplexity(lm.model, lm.tokenizer, held_out)
    teacher = (
        load_model(args.teacher, dtype=args.dtype, device=args.device).model
        if args.teacher
        else None
    )

    def progress(step: int, total: int, loss: float) -> None:
        print(f"\rstep {step}/{total} loss {loss:.3f}", end="", file=sys.stderr, flush=True)

    res = heal(
        lm.model,
        lm.tokenizer,
        train,
        args.steps,
        args.rank,
        args.lr,
        args.seq_len,
        args.batch_size,
        callback=progress,
        dataset=args.dataset,
        teacher=teacher,
        self_text=args.self_text,
    )
    print(file=sys.stderr)
    after = perplexity(res.model, lm.tokenizer, held_out)
    source = (read_recipe(args.model) if Path(args.model).is_dir() else None) or {}
    recipe = {**source, "healed": {**res.recipe, "teacher": args.teacher}, "source": args.model}
    if is_pruned(res.model):
        path = save_pruned(res.model, lm.tokenizer, args.out, recipe)
    else:
        try:
            path = export_model(res.model, lm.tokenizer, args.out, recipe).path
        except RuntimeError as e:
            raise LacoError(str(e)) from None
    print(
        f"Healed {args.model}: {args.steps} LoRA steps (r={args.rank}) in {res.seconds:.0f} s, "
        f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; held-out perplexity "
        f"{before:.2f} -> {after:.2f}. Saved to {path}."
    )
    return 0
