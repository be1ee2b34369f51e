"""On the default model the KL objective's ``moments`` form (the default) walks the same
greedy plan as the full log-probability reference, with the default pipeline's settings
(over the top third of the layers, two steps)."""

from __future__ import annotations

import pytest

from laco_core.assets import read_asset
from laco_core.ops import run_search
from laco_core.presets import SEARCH_TEXT
from laco_core.search.objectives import KL
from tests.helpers import default_search_config


@pytest.mark.slow
def test_default_model_greedy_plan_identical_under_both_kl_forms(default_model):
    lm = default_model
    texts = read_asset(SEARCH_TEXT)[:4]  # fewer paragraphs than the pipeline's: a test's time
    runs = [
        run_search(
            lm.model,
            lm.tokenizer,
            texts,
            # over the top third, where the pipeline's removals fall: a test's time
            default_search_config(
                lm.num_layers, {"target_layers": 2}, low=20, objective_params={"form": form}
            ),
        )
        for form in KL.FORMS
    ]
    fast, ref = runs
    assert fast.plan == ref.plan
    for a, b in zip(fast.accepted, ref.accepted, strict=True):
        assert a[:2] == b[:2]
        assert a[2] == pytest.approx(b[2], rel=1e-4)
