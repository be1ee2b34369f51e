"""``laco eval``: perplexity of a model, and its agreement with a reference model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..assets import EVAL_TEXT
from ..errors import LacoError
from ..evaluate import evaluate
from ..models import load_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Perplexity (and KL / agreement with a reference model).")
    p.add_argument("--model", default="default", help="model spec or exported directory")
    p.add_argument(
        "--reference", help="reference model spec (e.g. the original) for KL and agreement"
    )
    p.add_argument(
        "--text", default=str(EVAL_TEXT), help="UTF-8 text file (default: bundled held-out text)"
    )
    p.add_argument("--seq-len", type=int, default=256, help="window length in tokens (default 256)")
    p.add_argument("--json", dest="json_out", help="write the metrics to this JSON file")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.set_defaults(func=run)


def read_text_file(path: str) -> str:
    """A text file's content, or a LacoError naming the file."""
    f = Path(path).expanduser()
    if not f.is_file():
        raise LacoError(f"Text file not found: {path}")
    try:
        return f.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LacoError(f"'{path}' is not UTF-8 text.") from None


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.seq_len < 2:
        raise LacoError(f"--seq-len must be at least 2 (got {args.seq_len}).")
    text = read_text_file(args.text)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    ref = None
    if args.reference:
        ref_lm = load_model(args.reference, dtype=args.dtype, device=args.device)
        if ref_lm.model.config.vocab_size != lm.model.config.vocab_size:
            raise LacoError(
                "The model and the reference have different vocabularies; compare models of one family."
            )
        ref = ref_lm.model.to(lm.device)
    metrics = evaluate(lm.model, lm.tokenizer, text, reference=ref, seq_len=args.seq_len)
    metrics = {"model": args.model, "reference": args.reference, "seq_len": args.seq_len, **metrics}
    print(f"model {args.model}: ppl {metrics['ppl']:.3f}, params {metrics['params']:,}")
    if ref is not None:
        cos = metrics["final_cosine"]
        print(
            f"reference {args.reference}: ppl {metrics['ref_ppl']:.3f}, params ratio {metrics['params_ratio']:.4f}, "
            f"KL {metrics['kl']:.4f} nats/token, top-1 agreement {metrics['top1_agreement']:.3f}, "
            f"final cosine {'n/a' if cos is None else f'{cos:.4f}'}"
        )
    if args.json_out:
        Path(args.json_out).expanduser().write_text(
            json.dumps(metrics, indent=2) + "\n", encoding="utf-8"
        )
    return 0
