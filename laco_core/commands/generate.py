"""``laco generate``: stream an answer, optionally next to a second model's answer."""

from __future__ import annotations

import argparse
import sys

from ..analysis.generate import DecodeSettings, first_divergence, stream, stream_pair
from ..errors import LacoError
from ..loading.limits import Limits
from ..loading.models import load_model

HELP = "Stream generation; --compare runs a second model on the same prompt."


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="model spec or exported directory")
    p.add_argument("--compare", help="second model spec or exported directory (same tokenizer)")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")


class _Printer:
    """Writes only the new part of a growing text (holding back a half-decoded character)."""

    def __init__(self, out=None):
        # sys.stdout read when printing starts, not at import (it may have been replaced since)
        self.out, self.shown = out or sys.stdout, ""

    def update(self, text: str, final: bool = False) -> None:
        if not final:
            text = text.rstrip("\ufffd")
        if text.startswith(self.shown):
            self.out.write(text[len(self.shown) :])
        else:  # a re-tokenized tail: print what changed on a fresh line
            self.out.write("\n" + text)
        self.out.flush()
        self.shown = text


def _stats(name: str, st) -> str:
    return f"[{name}: {len(st.token_ids)} tokens, {st.tokens_per_s:.1f} tokens/s, first token {st.first_token_latency_s or 0:.2f} s]"


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.max_new_tokens < 1:
        raise LacoError(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens}).")
    settings = DecodeSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        chat=not args.no_chat,
    ).validate()
    limits = Limits.current()
    limits.check("new_tokens", settings.max_new_tokens, "--max-new-tokens")
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    limits.check_prompt(lm.tokenizer, args.prompt, "--prompt")
    printer = _Printer()
    if not args.compare:
        st = None
        for st in stream(lm.model, lm.tokenizer, args.prompt, settings):
            printer.update(st.text)
        printer.update(st.text, final=True)
        print("\n" + _stats(args.model, st))
        return 0

    other = load_model(args.compare, dtype=args.dtype, device=args.device)
    if other.model.config.vocab_size != lm.model.config.vocab_size:
        raise LacoError("The two models have different vocabularies; compare models of one family.")
    print(f"=== {args.model} ===")
    a = b = None
    pairs = stream_pair(lm.model, other.model.to(lm.device), lm.tokenizer, args.prompt, settings)
    for a, b in pairs:  # noqa: B007 - the last pair is used after the loop
        printer.update(a.text)  # model A streams live; B is shown once both are done
    printer.update(a.text, final=True)
    print("\n" + _stats(args.model, a))
    print(f"=== {args.compare} ===")
    print(b.text)
    print(_stats(args.compare, b))
    div = first_divergence(a.token_ids, b.token_ids)
    print("identical answers" if div is None else f"answers diverge at generated token {div}")
    return 0
