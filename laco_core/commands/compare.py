"""``laco compare``: every method at several ratios, held-out perplexity and KL, as a table."""

from __future__ import annotations

import argparse
import sys

from ..errors import LacoError
from ..loading.models import SPEC_HELP
from .common import check_output_file, write_json

HELP = "Compare LaCo, ShortGPT, angular and LLM-Pruner at target ratios."


def add_flags(p: argparse.ArgumentParser) -> None:
    from ..runtime.comparison import DEFAULT_METHODS, METHODS

    p.add_argument("--model", default="default", help=SPEC_HELP)
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


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LacoError(f"Cannot read ratios '{text}': write e.g. 0.1,0.2,0.3.") from None


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..assets import read_prompts, read_text
    from ..loading.models import load_model
    from ..runtime.comparison import compare_all, markdown_table

    hf_logging.disable_progress_bar()
    ratios = _ratios(args.ratios)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.eval_windows < 0:
        raise LacoError(f"--eval-windows must be 0 (all) or more (got {args.eval_windows}).")
    if args.heal_steps < 0:
        raise LacoError(f"--heal-steps must be 0 (no heal) or more (got {args.heal_steps}).")
    json_file = check_output_file(args.json_out, "--json")
    csv_file = check_output_file(args.csv_out, "--csv")
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
    write_json(json_file, df.to_dict("records"))
    if csv_file is not None:
        try:
            df.to_csv(csv_file, index=False)
        except OSError as e:
            raise LacoError(f"Cannot write '{args.csv_out}': {e.strerror or e}.") from None
    for note in sorted(set(df["note"].dropna()) - {""}):
        print(f"note: {note}", file=sys.stderr)
    return 0
