"""``laco eval``: perplexity of a model, and its agreement with a reference model.

With ``--tasks`` it runs lm-evaluation-harness tasks instead and prints the papers' table:
accuracy per task, the average, and % of the reference (dense) model's average.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys

from ..analysis.evaluate import evaluate
from ..assets import EVAL_TEXT
from ..errors import LacoError
from ..loading.limits import Limits
from ..loading.models import load_model
from .common import check_output_file, read_user_text, write_json

HELP = "Perplexity (and KL / agreement with a reference model), or lm-eval task scores."


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        help="model spec or exported directory (default: default); repeat for several "
        "models with --tasks",
    )
    p.add_argument(
        "--reference",
        help="reference model spec (e.g. the original): KL and agreement, or with --tasks "
        "the dense row the %% of dense average is taken of",
    )
    p.add_argument(
        "--text", default=str(EVAL_TEXT), help="UTF-8 text file (default: bundled held-out text)"
    )
    p.add_argument("--seq-len", type=int, default=256, help="window length in tokens (default 256)")
    p.add_argument("--json", dest="json_out", help="write the metrics to this JSON file")
    g = p.add_argument_group("lm-evaluation-harness (needs the eval extra)")
    g.add_argument(
        "--tasks",
        help="comma-separated lm-eval tasks, e.g. laco_mc (bundled, offline) or "
        "piqa,hellaswag,winogrande,arc_easy,arc_challenge,boolq,openbookqa",
    )
    g.add_argument(
        "--include-path",
        action="append",
        metavar="DIR",
        help="folder of your own task YAMLs; repeat for several",
    )
    g.add_argument("--limit", type=int, help="score only the first N documents of each task")
    g.add_argument("--num-fewshot", type=int, metavar="K", help="few-shot examples per prompt")
    g.add_argument(
        "--batch-size", type=int, default=8, help="sequences per forward pass (default 8)"
    )
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")


def read_text_file(path: str) -> str:
    """A text file's content (UTF-8, not binary), or a LacoError naming the file."""
    text = read_user_text(path, "Text file")
    if "\x00" in text:
        raise LacoError(f"Text file '{path}' is not text (it holds NUL bytes).")
    return text


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    models = args.model or ["default"]
    if args.tasks is not None:
        return run_tasks_command(args, models)
    if len(models) > 1:
        raise LacoError("Perplexity takes one --model; give several only with --tasks.")
    args.model = models[0]
    if args.seq_len < 2:
        raise LacoError(f"--seq-len must be at least 2 (got {args.seq_len}).")
    limits = Limits.current()
    limits.check("seq_len", args.seq_len, "--seq-len")
    out_file = check_output_file(args.json_out, "--json")
    text = read_text_file(args.text)
    limits.check_text(text, "--text")
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
    write_json(out_file, metrics)
    return 0


# ---- lm-evaluation-harness -------------------------------------------------------------------


class ProgressPrinter:
    """Prints lm-eval progress on stderr: each new step, then every 10 % of it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.what, self.shown = "", -1

    def __call__(self, done: int, total: int, what: str) -> None:
        tenth = 10 * done // total if total else 10
        if what != self.what or tenth > self.shown:
            self.what, self.shown = what, tenth
            print(f"[{self.label}] {what}: {done}/{total}", file=sys.stderr, flush=True)


def _quiet_lm_eval() -> None:
    """lm-eval and datasets log every step at INFO/WARNING; the CLI prints its own progress."""
    import logging

    for name in ("lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def run_tasks_command(args: argparse.Namespace, models: list[str]) -> int:
    """``laco eval --tasks``: every model (reference first) through lm-eval, then the table."""
    from ..exchange.lmeval import load_tasks, paper_table, run_tasks, table_markdown

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise LacoError("--tasks is empty: name lm-eval tasks, e.g. --tasks laco_mc.")
    if args.limit is not None and args.limit < 1:
        raise LacoError(f"--limit must be at least 1 (got {args.limit}).")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise LacoError(f"--num-fewshot must be 0 or more (got {args.num_fewshot}).")
    out_file = check_output_file(args.json_out, "--json")
    _quiet_lm_eval()
    # unknown tasks, missing folders and unreachable datasets: report before loading a model
    load_tasks(tasks, args.include_path)
    specs = ([args.reference] if args.reference else []) + [
        m for m in models if m != args.reference
    ]
    results: dict[str, dict] = {}
    for spec in specs:
        lm = load_model(spec, dtype=args.dtype, device=args.device)
        print(f"{spec}: {lm.num_layers} layers, {lm.num_params:,} parameters", file=sys.stderr)
        results[spec] = run_tasks(
            lm.model,
            lm.tokenizer,
            tasks,
            include_path=args.include_path,
            limit=args.limit,
            num_fewshot=args.num_fewshot,
            batch_size=args.batch_size,
            progress=ProgressPrinter(spec),
        )
        del lm
        gc.collect()
    table = paper_table(results, args.reference)
    print(table_markdown(table), end="")
    if args.json_out:
        out = {
            "tasks": tasks,
            "limit": args.limit,
            "num_fewshot": args.num_fewshot,
            "reference": args.reference,
            "results": results,
            "table": json.loads(table.to_json(orient="index")),
        }
        write_json(out_file, out)
    return 0
