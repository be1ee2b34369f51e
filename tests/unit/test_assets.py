"""The bundled texts: training text never shares passages with the held-out texts."""

from __future__ import annotations

import re

import pytest

from laco_core.assets import (
    EVAL_TEXT,
    STORY_TEXT,
    TRAIN_MORE,
    TRAIN_TEXT,
    read_asset,
    read_paragraphs,
    read_text,
)
from laco_core.errors import LacoError


def _ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@pytest.mark.parametrize("train", [TRAIN_TEXT, TRAIN_MORE], ids=["train", "train_more"])
@pytest.mark.parametrize("held_out", [EVAL_TEXT, STORY_TEXT], ids=["eval", "story"])
def test_training_and_held_out_texts_share_no_passage(train, held_out):
    assert not _ngrams(read_text(train)) & _ngrams(read_text(held_out))


def test_fit_and_training_assets_cover_both_training_texts():
    fit, valid = read_asset("fit_paragraphs"), read_asset("valid_paragraphs")
    # the validation slice is the training texts' last paragraphs, never fitted on
    assert fit + valid == read_paragraphs(TRAIN_TEXT) + read_paragraphs(TRAIN_MORE)
    assert len(valid) >= 8 and not set(valid) & set(fit)
    assert not set(valid) & set(read_asset("train_paragraphs"))
    assert len(fit) > len(read_asset("train_paragraphs")) >= 39
    assert read_asset("training_text") == [read_text(TRAIN_TEXT), read_text(TRAIN_MORE)]
    with pytest.raises(LacoError, match="Unknown bundled text 'nope'"):
        read_asset("nope")


def test_bundled_texts_are_recognised_and_user_text_is_not():
    from laco_core.assets import is_bundled

    fit = read_asset("fit_paragraphs")
    assert is_bundled(fit) and is_bundled(read_asset("train_paragraphs")[:16])
    assert not is_bundled([]) and not is_bundled(["my own prompt"])
    assert not is_bundled([*fit[:3], "a user paragraph"])
