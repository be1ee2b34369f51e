"""What every command shares: model flags, reading user files, writing outputs safely."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..assets import read_paragraphs, read_prompts
from ..errors import LacoError
from ..loading.models import SPEC_HELP


def add_model_args(p: argparse.ArgumentParser, default: str | None = "default") -> None:
    """``--model``, ``--dtype``, ``--device``."""
    if default is None:
        p.add_argument("--model", required=True, help="model spec or exported directory")
    else:
        p.add_argument("--model", default=default, help=SPEC_HELP)
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")


def add_out_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--out`` and ``--overwrite``."""
    p.add_argument("--out", required=required, help="folder to export the model to")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists and is not empty (never the source model's folder)",
    )


def load(args: argparse.Namespace, spec: str | None = None):
    """The model ``--model`` (or ``spec``) names, quietly."""
    from transformers.utils import logging as hf_logging

    from ..loading.models import load_model

    hf_logging.disable_progress_bar()
    return load_model(spec or args.model, dtype=args.dtype, device=args.device)


def source_dirs(*specs: str | None) -> list[str]:
    """The folders among model specs (an export must never replace one of them)."""
    return [s for s in specs if s and Path(s).expanduser().is_dir()]


def read_user_text(path: str, what: str = "Text file") -> str:
    """A UTF-8 text file's content, or one clear LacoError."""
    f = Path(path).expanduser()
    if not f.exists():
        raise LacoError(f"{what} not found: {path}")
    if not f.is_file():
        raise LacoError(f"{what} '{path}' is a folder; give a UTF-8 text file.")
    try:
        return f.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LacoError(f"{what} '{path}' is not UTF-8 text.") from None
    except OSError as e:
        raise LacoError(f"Cannot read {what.lower()} '{path}': {e.strerror}.") from None


def read_prompt_file(path: str | None, paragraphs: bool = False) -> list[str]:
    """Calibration texts from ``path`` (one per line, or per paragraph), or the bundled ones."""
    if path is None:
        return read_paragraphs() if paragraphs else read_prompts()
    text = read_user_text(path, "Prompts file")
    if "\x00" in text:
        raise LacoError(f"Prompts file '{path}' is not text (it holds NUL bytes).")
    if paragraphs:
        items = [p.strip() for p in text.split("\n\n") if len(p.strip()) >= 100]
    else:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise LacoError(f"No prompts in '{path}': write one prompt per line.")
    return items


def check_output_file(path: str | None, flag: str) -> Path | None:
    """Refuse an output file whose folder is missing or that is a folder, before any work."""
    if not path:
        return None
    f = Path(path).expanduser()
    if f.is_dir():
        raise LacoError(f"{flag} '{path}' is a folder; give a file name.")
    if not f.parent.is_dir():
        raise LacoError(f"{flag} '{path}': the folder '{f.parent}' does not exist.")
    return f


def write_json(path: Path | None, obj) -> None:
    if path is None:
        return
    try:
        path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as e:
        raise LacoError(f"Cannot write '{path}': {e.strerror}.") from None


def measure_validation(model, base, recipe) -> dict:
    """Score a build on the validation slice before export; the card then states it."""
    from ..search.curve import validation

    recipe.info["validation"] = validation(model, base.model, base.tokenizer)
    return recipe.info["validation"]


def export_measured(model, base, recipe, out: str, overwrite: bool, protect) -> tuple:
    """Score a build on the validation slice (:func:`measure_validation`), export it and
    reload-verify it (``pipeline.export``).

    Returns:
        The export's result and the line saying how it verified and scored
        (:func:`quality_lines`).
    """
    from ..pipeline import export

    valid = measure_validation(model, base, recipe)
    result = export(model, base, out, recipe, overwrite, protect)
    return result, quality_lines(valid, result)


def quality_lines(valid: dict, out) -> str:
    """``reload-verified (…), validation perplexity R x dense`` and, past the cliff, the loud
    line on its own line."""
    from ..search.curve import cliff_line

    line = (
        f"reload-verified (max |logit diff| {out.max_abs_logit_diff:.2e}), validation "
        f"perplexity {valid['ppl_ratio']:.2f}x dense ({valid['text']})"
    )
    loud = cliff_line(valid["ppl_ratio"])
    return line + (f".\n{loud}" if loud else ".")


def write_curve(curve, out_dir: str | Path) -> list[str]:
    """A search's size–quality curve beside its export: ``quality_curve.json`` and, where
    matplotlib is installed, ``quality_curve.png`` (knee and budget marked)."""
    out = Path(out_dir)
    written = [out / "quality_curve.json"]
    write_json(written[0], curve.to_dict())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
    except ImportError:
        return [str(p) for p in written]
    xs = [0] + [p.layers_removed for p in curve.points]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(xs, [1] + [p.ppl_ratio for p in curve.points], "o-", label="searched plan")
    refit = [(p.layers_removed, p.ppl_ratio_refit) for p in curve.points if p.ppl_ratio_refit]
    if refit:
        ax.plot(*zip(*refit, strict=True), "s", color="C2", label="after the refit")
    if (knee := curve.knee()) is not None:
        ax.axvline(knee, color="C3", ls="--", lw=1, label=f"knee ({knee} layers)")
    if curve.max_ppl_ratio is not None:
        ax.axhline(curve.max_ppl_ratio, color="C1", ls=":", label="budget")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    top = max([1.0, *(p.ppl_ratio for p in curve.points), *(y for _, y in refit)])
    ticks = (1, 1.1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100, 1000)
    ax.set_yticks([t for t in ticks if t <= top * 1.05] or [1])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layers removed")
    ax.set_ylabel(f"perplexity ÷ dense ({curve.text})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / "quality_curve.png")
    fig.savefig(written[-1])
    plt.close(fig)
    return [str(p) for p in written]


def positive(value: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return n


def fraction(value: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1 (exclusive)")
    return x
