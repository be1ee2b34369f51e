"""Bundled text we wrote ourselves: calibration prompts, evaluation and training text."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from .errors import LacoError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CALIBRATION = ASSETS / "calibration_prompts.txt"  # one prompt per line
EVAL_TEXT = ASSETS / "eval_text.txt"  # held out: never used for calibration or training
# a second held-out text of another genre (narrative fiction and dialogue; the training text
# is expository): also never used to calibrate, fit or heal
STORY_TEXT = ASSETS / "heldout_story.txt"
TRAIN_TEXT = ASSETS / "train_text.txt"  # LoRA recovery text, disjoint from both
# more expository training text of our own (other topics): the best pipeline's fits and heals
# use it beside TRAIN_TEXT; disjoint from both held-out texts
TRAIN_MORE = ASSETS / "train_more.txt"


def read_prompts(path: str | Path | None = None) -> list[str]:
    """Prompts from a UTF-8 file, one per non-empty line (default: our calibration prompts)."""
    lines = Path(path or CALIBRATION).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def read_text(path: str | Path | None = None) -> str:
    """A whole text file (default: our held-out evaluation text)."""
    return Path(path or EVAL_TEXT).read_text(encoding="utf-8")


def read_paragraphs(path: str | Path | None = None, min_chars: int = 100) -> list[str]:
    """Paragraphs (blank-line separated) of at least ``min_chars`` characters of a text file.

    Default: the training text, a larger calibration set than the prompts for fitted methods
    (it is disjoint from the held-out evaluation text).
    """
    text = Path(path or TRAIN_TEXT).read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= min_chars]


VALID_PARAGRAPHS = 8  # the last paragraphs of TRAIN_MORE: a search's validation slice


def _fit_and_valid() -> tuple[list[str], list[str]]:
    """Both training texts' paragraphs, split into what fits learn from and what validates
    them (the last ``VALID_PARAGRAPHS``); neither touches the held-out evaluation texts."""
    more = read_paragraphs(TRAIN_MORE)
    return read_paragraphs(TRAIN_TEXT) + more[:-VALID_PARAGRAPHS], more[-VALID_PARAGRAPHS:]


# bundled texts a recipe may reference by name instead of copying them
ASSET_TEXTS = {
    "calibration_prompts": lambda: read_prompts(CALIBRATION),
    "train_paragraphs": lambda: read_paragraphs(TRAIN_TEXT),
    "train_text": lambda: [read_text(TRAIN_TEXT)],
    # the fits' larger training set: both training texts, less the validation slice
    "fit_paragraphs": lambda: _fit_and_valid()[0],
    # what a search's size–quality curve and quality budget are measured on
    "valid_paragraphs": lambda: _fit_and_valid()[1],
    "training_text": lambda: [read_text(TRAIN_TEXT), read_text(TRAIN_MORE)],
}


def read_asset(name: str) -> list[str]:
    """A bundled text as a list of texts (prompts, paragraphs, or one whole text)."""
    if name not in ASSET_TEXTS:
        raise LacoError(f"Unknown bundled text '{name}'; known: {', '.join(ASSET_TEXTS)}.")
    return ASSET_TEXTS[name]()


@cache
def _bundled(name: str) -> tuple[str, ...]:
    """A bundled text read once per process (the files ship with the package)."""
    return tuple(read_asset(name))


def is_bundled(texts: list[str]) -> bool:
    """Whether ``texts`` are a bundled text (or its first items): ours, not user input, so
    the input limits do not apply to them. Cheap enough for every preview."""
    texts = tuple(texts)
    return bool(texts) and any(_bundled(name)[: len(texts)] == texts for name in ASSET_TEXTS)
