"""Collapse plans: parsing ``LO-HI`` strings and validating them against a model's depth."""

from __future__ import annotations

import pytest

from laco_core.arch.plan import layer_groups, parse_ranges, validate_ranges
from laco_core.errors import LacoError
from laco_core.ops import get_method


@pytest.mark.parametrize(
    "text, expected",
    [
        ("16-18", [(16, 18)]),
        ("20-23, 10-12", [(20, 23), (10, 12)]),
        ("1:3;5-6", [(1, 3), (5, 6)]),
        ("  4-7\n", [(4, 7)]),
        (["2-3", (5, 8)], [(2, 3), (5, 8)]),
    ],
)
def test_parse_ranges(text, expected):
    assert parse_ranges(text) == expected


@pytest.mark.parametrize("text", ["abc", "16", "16-", "1-2-3", "a-b"])
def test_parse_rejects_garbage_with_an_example(text):
    with pytest.raises(LacoError, match="LO-HI"):
        parse_ranges(text)


def test_validate_sorts():
    assert validate_ranges([(10, 12), (2, 4)], 30) == [(2, 4), (10, 12)]


@pytest.mark.parametrize(
    "ranges, message",
    [
        ([(5, 3)], "LO > HI"),
        ([(4, 4)], "one layer"),
        ([(28, 30)], "outside the model's layers 0-29"),
        ([(-1, 2)], "below layer 0"),
        ([(2, 5), (5, 7)], "overlap"),
        ([(2, 6), (3, 4)], "overlap"),
        ([], "empty"),
    ],
)
def test_validate_rejects_with_a_clear_message(ranges, message):
    with pytest.raises(LacoError, match=message):
        validate_ranges(ranges, 30)


def test_messages_are_one_line():
    for bad in ([(5, 3)], [(28, 30)], [(2, 5), (4, 7)]):
        with pytest.raises(LacoError) as e:
            validate_ranges(bad, 30)
        assert "\n" not in str(e.value)


def test_layer_groups_cover_every_layer_once():
    groups = layer_groups([(1, 3), (5, 6)], 8)
    assert groups == [(0, 0), (1, 3), (4, 4), (5, 6), (7, 7)]
    assert sum(hi - lo + 1 for lo, hi in groups) == 8


def test_unknown_method_names_the_choices():
    with pytest.raises(LacoError, match="official, rdsc, average, drop"):
        get_method("eq1")
