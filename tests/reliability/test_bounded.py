"""Bounded work: input over a limit is refused before the model runs, and evaluation's peak
memory is set by its chunks, not by the text or the window."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from laco_core.analysis import evaluate as ev
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LimitExceeded
from laco_core.loading.limits import Limits
from laco_core.pipeline import recipe_from_dict
from laco_core.recipe import TextSource
from laco_core.runtime.budget import rss_bytes
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.heal import HealStep
from laco_core.steps.search import SearchStep
from tests.reliability.common import save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 40)


@pytest.fixture
def engine_and_base(tmp_path):
    engine = Engine(limits=Limits.current(False).replace(calibration_tokens=2000))
    base = engine.load(str(save_tiny(tmp_path / "m")), "float32", "cpu")
    calls = []
    base.model.register_forward_pre_hook(lambda *a: calls.append(1))
    for layer in base.model.model.layers:
        layer.register_forward_pre_hook(lambda *a: calls.append(1))
    return engine, base, calls


def _search(texts):
    return SearchStep(SearchConfig(merge_count=2), TextSource.of(texts))


@pytest.mark.parametrize(
    "step, message",
    [
        (
            _search(["x" * 100_000]),
            "A calibration prompt: 100,000 tokens, over the limit of 4,096",
        ),
        (
            _search(["word " * 60] * 40),
            "Calibration prompts in total: 12,000 tokens, over the limit of 2,000",
        ),
        (_search([f"p{i}" for i in range(600)]), "Calibration prompts: 600 prompts"),
        (
            CollapseStep([[1, 2]], "drop_lsq", calibration=TextSource.of(["y" * 200_000])),
            "A calibration prompt (at least): 6,250 tokens",
        ),
        (HealStep(steps=10**6), "Heal steps: 1,000,000 steps, over the limit of 5,000"),
        (HealStep(seq_len=100_000), "The heal window: 100,000 tokens, over the limit of 4,096"),
        (
            HealStep(text=TextSource.of(["z" * 3_000_000])),
            "The training text: 3,000,000 characters, over the limit of 2,000,000",
        ),
    ],
    ids=[
        "long prompt",
        "total tokens",
        "prompt count",
        "fit text",
        "heal steps",
        "heal window",
        "heal text",
    ],
)
def test_over_a_limit_is_refused_before_the_model_runs(engine_and_base, step, message):
    engine, base, calls = engine_and_base
    with pytest.raises(LimitExceeded) as info:
        engine.run(base, [step], "someone")
    assert str(info.value).startswith(message)
    assert calls == []  # not one forward
    assert engine.builds("someone") == []


def test_an_uploaded_recipe_over_a_limit_is_refused(engine_and_base):
    engine, base, calls = engine_and_base
    recipe = recipe_from_dict(
        {
            "format": "laco-recipe",
            "version": 2,
            "base": {"spec": base.spec, "dtype": "float32", "device": "cpu"},
            "steps": [
                {
                    "kind": "search",
                    "config": {"merge_count": 2},
                    "calibration": {"texts": ["x" * 100_000]},
                },
            ],
        }
    )
    with pytest.raises(LimitExceeded, match="^A calibration prompt: 100,000 tokens"):
        engine.add_recipe(recipe, "someone")
    assert calls == []


def test_evaluation_runs_the_head_on_bounded_chunks(monkeypatch):
    model = tiny_model("llama", layers=4)
    ref = tiny_model("llama", layers=4, seed=1)
    tok = tiny_tokenizer()
    want = ev.reference_metrics(model, ref, tok, TEXT, seq_len=200)
    want_ppl = ev.perplexity(model, tok, TEXT, seq_len=200)
    rows = []
    real = ev.logits_of

    def spy(m, states):
        rows.append(states.shape[0])
        return real(m, states)

    monkeypatch.setattr(ev, "logits_of", spy)
    monkeypatch.setattr(ev, "LOGIT_ELEMENTS", 256 * 16)  # 16 positions of a 256-token vocab
    got = ev.reference_metrics(model, ref, tok, TEXT, seq_len=200)
    assert max(rows) == 16 and len(rows) > 2 * 2000 // 16 // 2
    for key in ("kl", "top1_agreement", "final_cosine", "ppl", "ref_ppl"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert ev.perplexity(model, tok, TEXT, seq_len=200) == pytest.approx(want_ppl, rel=1e-6)
    assert ev.batch_for(256, 4) == 4 and ev.batch_for(1024, 8) == 4 and ev.batch_for(4096, 4) == 1


@pytest.mark.slow
def test_evaluate_at_the_ui_maximum_window_stays_small(default_model):
    """Two 1024-token windows on the default model (49k vocabulary): unchunked, one batch
    held several (2, 1024, 49152) float tensors, ~3 GB; chunked, well under 1 GiB."""
    from laco_core.assets import read_text
    from laco_core.ops import build_collapsed

    collapsed = build_collapsed(default_model.model, [(16, 18)], "official")
    ids = default_model.tokenizer(read_text()).input_ids[: 2 * 1024]
    text = default_model.tokenizer.decode(ids)
    peak, start, done = [0], rss_bytes(), threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with torch.no_grad():
            m = ev.evaluate(collapsed, default_model.tokenizer, text, default_model.model, 1024)
    finally:
        done.set()
        watcher.join()
    assert m["ppl"] > 1 and m["kl"] >= 0
    assert peak[0] - start < 2**30, (peak[0] - start) / 2**30
