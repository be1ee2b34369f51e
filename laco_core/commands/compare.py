"""``laco compare``: every method at several ratios, held-out perplexity and KL, as a table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import LacoError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..comparison import DEFAULT_METHODS, METHODS

    p = sub.add_parser(
        "compare", help="Compare LaCo, ShortGPT, angular and LLM-Pruner at target ratios."
    )
    p.add_argument(
        "--model", default="default", help="model spec: default, Hub id, directory or .gguf"
    )
    p.add_argument(
        "--ratios", default="0.1,0.2,0.3", help="comma-separated fractions of parameters to remove"
    )
    p.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help=f"subset of {','.join(METHODS)}"
    )
    p.add_argument("--heal-steps", type=int, default=0, help="LoRA steps for healed rows (0: none)")
    p.add_argument(
        "--eval-windows", type=int, default=8, help="256-token windows of held-out text (0: all)"
    )
    p.add_argument("--json", dest="json_out", help="write the rows as JSON")
    p.add_argument("--csv", dest="csv_out", help="write the rows as CSV")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LacoError(f"Cannot read ratios '{text}': write e.g. 0.1,0.2,0.3.") from None


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..assets import read_prompts, read_text
    from ..comparison import compare_all, markdown_table
    from ..models import load_model

    hf_logging.disable_progress_bar()
    ratios = _ratios(args.ratios)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    lm = load_model(args.model, dtype=args.dtype, device=args.device)

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    df = compare_all(
        lm.model,
        lm.tokenizer,
        read_text(),
        read_prompts(),
        ratios,
        args.heal_steps,
        methods,
        progress,
        eval_windows=args.eval_windows or None,
    )
    print(markdown_table(df))
    if args.json_out:
        Path(args.json_out).expanduser().write_text(
            json.dumps(df.to_dict("records"), default=str, indent=1)
        )
    if args.csv_out:
        df.to_csv(Path(args.csv_out).expanduser(), index=False)
    for note in sorted(set(df["note"].dropna()) - {""}):
        print(f"note: {note}", file=sys.stderr)
    return 0
