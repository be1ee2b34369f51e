"""The default heal on tiny models: validation stop keeps the best adapter, a longer budget never
ends worse on the validation slice, sampled text is cached per base model, and the recipe
records what a rebuild replays."""

from __future__ import annotations

import json

import pytest
import torch

from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.heal import WARMUP_STEPS, apply_lora, heal, scheduled_lr, validation_ppl
from laco_core.pipeline import context
from laco_core.presets import best_collapse
from laco_core.recipe import TextSource
from laco_core.runtime.comparison import as_base
from laco_core.steps.heal import HealStep, default_heal

TEXT = "abcabc the cat sat on the mat. " * 80
VALID = ["the dog ran to the park and back home again.", "a bird sang on the old oak tree."]


def _heal(m, steps):
    kw = dict(rank=4, lr=3e-2, seq_len=32, batch_size=2, validation=VALID, eval_every=2)
    return heal(m, tiny_tokenizer(), TEXT, steps=steps, patience=2, **kw)


def test_validation_stop_keeps_the_best_adapter_and_longer_never_ends_worse():
    m = tiny_model("llama", layers=3)
    short, long = _heal(m, 4), _heal(m, 40)
    assert short.curve[0][0] == 0 and [s for s, _ in short.curve] == [0, 2, 4]
    for res in (short, long):
        best = min(p for _, p in res.curve)
        assert dict(res.curve)[res.best_step] == best
        assert abs(validation_ppl(res.model, tiny_tokenizer(), VALID) - best) < 1e-3 * best
        again = apply_lora(m, res.adapters, res.scaling)  # the recorded adapter is the kept one
        x = torch.randint(3, 250, (1, 16))
        with torch.no_grad():
            torch.testing.assert_close(again(x).logits, res.model(x).logits)
    # the same seed walks the same path: the longer heal's best is at least the shorter's
    assert min(p for _, p in long.curve) <= min(p for _, p in short.curve)
    # patience: it stops two scores after its best (or at the last step)
    last = long.curve[-1][0]
    assert last == len(long.losses)
    assert (
        last < 40
        or long.best_step == 40
        or len(long.curve) - 1 - [s for s, _ in long.curve].index(long.best_step) <= 2
    )


def test_default_heal_distils_on_cached_samples_and_replays(tmp_path, monkeypatch):
    monkeypatch.setenv("LACO_CACHE", str(tmp_path))
    tok = tiny_tokenizer()
    dense = tiny_model("llama", layers=4)
    dense.requires_grad_(False)
    student = tiny_model("llama", layers=2)
    student.requires_grad_(False)
    ctx = context(as_base(dense, tok))
    events = []
    ctx.events = events.append
    step = default_heal(60, max_steps=4, self_text=4, seq_len=32, batch_size=2, eval_every=2)
    step.text = TextSource.of([TEXT])
    step.validation = TextSource.of(VALID)
    assert step.teacher and step.self_text == 4
    model, done = step.apply(student, ctx)
    assert [e["cached"] for e in events if "samples" in e] == [0]
    assert list((tmp_path / "heal-samples").glob("*.json"))
    assert done.steps == 4 and done.best_step is not None and done.validation_curve[0][0] == 0
    assert done.self_text == 4 and done.seed == 0 and done.seconds is None
    events.clear()
    _, again = step.apply(student, ctx)  # the second heal reads the samples back
    assert [e["cached"] for e in events if "samples" in e] == [4]
    assert again.losses == done.losses
    # a recipe round trip replays the adapters exactly
    back = HealStep.from_dict(done.to_dict())
    back.adapters = done.adapters
    replayed, _ = back.apply(student, ctx)
    x = torch.randint(3, 250, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(replayed(x).logits, model(x).logits)


def test_best_collapse_appends_a_heal_step():
    steps = best_collapse(target_ratio=0.2, heal_seconds=120)
    assert [s.kind for s in steps] == ["search", "heal"]
    assert steps[1].seconds == 120 and steps[1].teacher and steps[1].validation is not None
    assert [s.kind for s in best_collapse(target_ratio=0.2)] == ["search"]


def test_sampling_that_eats_the_budget_is_said(tmp_path, monkeypatch, capsys):
    from laco_core.commands.heal import show

    monkeypatch.setenv("LACO_CACHE", str(tmp_path))
    tok = tiny_tokenizer()
    ctx = context(as_base(tiny_model("llama", layers=4), tok))
    events = []
    ctx.events = events.append
    step = default_heal(1e-3, max_steps=2, self_text=2, seq_len=32, batch_size=2)
    step.text = TextSource.of([TEXT])
    step.validation = TextSource.of(VALID)
    for cached in (0, 2):  # the first heal pays for the samples, the second reads them
        events.clear()
        step.apply(tiny_model("llama", layers=2), ctx)
        (sampled,) = [e for e in events if "samples" in e]
        assert sampled["cached"] == cached and sampled["budget"] == 1e-3
        show(sampled)
        out = capsys.readouterr().out
        assert ("WARNING: sampling took" in out and "of the 0.001 s budget" in out) is not cached


def test_sampling_stops_at_its_share_of_the_budget_and_the_next_heal_continues(
    tmp_path, monkeypatch, capsys
):
    from laco_core.commands.heal import show
    from laco_core.precision import autocast
    from laco_core.sampling import openings, sampled_texts
    from laco_core.steps.heal import SAMPLE_BATCH, SAMPLE_TOKENS

    monkeypatch.setenv("LACO_CACHE", str(tmp_path))
    tok = tiny_tokenizer()
    dense = tiny_model("llama", layers=4)
    ctx = context(as_base(dense, tok))
    events = []
    ctx.events = events.append
    asked = SAMPLE_BATCH + 3  # two batches: a full one, then 3
    step = default_heal(1e-3, max_steps=1, self_text=asked, seq_len=32, batch_size=2)
    step.text = TextSource.of([TEXT])
    step.validation = TextSource.of(VALID)
    outs = []
    for cached, drawn in ((0, SAMPLE_BATCH), (SAMPLE_BATCH, asked), (asked, asked)):
        events.clear()
        _, done = step.apply(tiny_model("llama", layers=2), ctx)
        (sampled,) = [e for e in events if "samples" in e]
        assert (sampled["cached"], sampled["samples"], sampled["asked"]) == (cached, drawn, asked)
        assert done.self_text == drawn  # the recipe says what it trained on
        show(sampled)
        out = capsys.readouterr().out
        assert ("sampling stopped at 50 % of the 0.001 s budget" in out) is (drawn < asked)
        outs.append(out)
    assert f"{asked} continuations ({SAMPLE_BATCH} read from the cache, 3 sampled" in outs[1]
    assert f"{asked} continuations read from the cache" in outs[2]
    # what the two cut-short heals drew is what one long run draws
    (cache,) = (tmp_path / "heal-samples").glob("*.json")
    with autocast("auto", torch.device("cpu")):  # as the heal samples
        whole = sampled_texts(dense, tok, openings(TEXT), asked, SAMPLE_TOKENS, SAMPLE_BATCH, 0)
    assert json.loads(cache.read_text()) == whole


def test_cosine_schedule_decays_to_zero_over_the_heal_and_constant_holds():
    warm = WARMUP_STEPS  # a step past the warm-up
    assert scheduled_lr(2e-3, "constant", 0.9, 0) == 2e-3
    assert scheduled_lr(2e-3, "cosine", 0.0, warm) == 2e-3
    assert scheduled_lr(2e-3, "cosine", 0.0, 0) == pytest.approx(2e-3 / WARMUP_STEPS)
    assert abs(scheduled_lr(2e-3, "cosine", 0.5, warm) - 1e-3) < 1e-12
    assert scheduled_lr(2e-3, "cosine", 1.0, warm) == 0.0
    assert scheduled_lr(2e-3, "cosine", 3.0, warm) == 0.0
    # a heal on it trains (the first step at the full rate) and refuses an unknown schedule
    tok = tiny_tokenizer()
    model = tiny_model("llama", layers=2)
    res = heal(model, tok, TEXT, steps=3, seq_len=32, batch_size=2, schedule="cosine")
    assert len(res.losses) == 3 and res.adapters
    with pytest.raises(LacoError, match="schedule 'linear' is not one of constant, cosine"):
        heal(model, tok, TEXT, steps=3, seq_len=32, batch_size=2, schedule="linear")


def test_bfloat16_precision_trains_like_float32_and_keeps_float32_adapters():
    from laco_core.precision import native_bf16, uses_bf16

    cpu = torch.device("cpu")
    assert uses_bf16("bfloat16", cpu) and not uses_bf16("float32", cpu)
    assert uses_bf16("auto", cpu) == native_bf16(cpu)
    tok = tiny_tokenizer()
    model = tiny_model("llama", layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {
        p: heal(model, tok, TEXT * 4, steps=3, rank=4, seq_len=32, batch_size=2, precision=p)
        for p in ("float32", "bfloat16")
    }
    # the same first loss up to bfloat16's rounding; the adapters learned in float32
    assert runs["bfloat16"].losses[0] == pytest.approx(runs["float32"].losses[0], rel=0.02)
    assert all(t.dtype == torch.float32 for t in runs["bfloat16"].adapters.values())
    assert runs["bfloat16"].losses != runs["float32"].losses  # it did compute in bfloat16
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(LacoError, match="precision 'half' is not one of auto, float32"):
        heal(model, tok, TEXT * 4, steps=1, seq_len=32, precision="half")
