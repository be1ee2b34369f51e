"""LoRA healing on tiny models: the loss goes down, the result is a plain model, the input is intact."""

from __future__ import annotations

import pytest
import torch

from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.heal import apply_lora, heal, lora_targets
from laco_core.ops import prune_llm_pruner
from laco_core.prune import load_pruned, save_pruned

TEXT = "abcabc the cat sat on the mat. " * 80


@pytest.mark.parametrize("arch", ["llama", "phi3", "qwen2"])
def test_heal_lowers_loss_and_returns_plain_model(arch):
    m = tiny_model(arch, layers=4)
    m.requires_grad_(False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    seen = []
    res = heal(
        m,
        tiny_tokenizer(),
        TEXT,
        steps=25,
        rank=4,
        lr=5e-3,
        seq_len=32,
        batch_size=2,
        callback=lambda s, t, loss: seen.append((s, t)),
    )
    assert seen[-1] == (25, 25)
    assert sum(res.losses[-5:]) / 5 < sum(res.losses[:5]) / 5 - 0.1
    assert type(res.model) is type(m)
    assert not any("lora" in n for n, _ in res.model.named_parameters())
    assert all(not p.requires_grad for p in res.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert set(lora_targets(m)) >= {"o_proj", "down_proj"}
    # the recorded LoRA factors fold into the input model again: the same model, exactly
    again = apply_lora(m, res.adapters, res.scaling)
    x = torch.randint(3, 250, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, res.model(x).logits, atol=0, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_heal_a_pruned_model_saves_and_reloads(tmp_path):
    tok = tiny_tokenizer()
    m = tiny_model("llama", layers=6)
    pruned = prune_llm_pruner(m, tok, [TEXT], 0.2, num_samples=2, seq_len=32).model
    res = heal(pruned, tok, TEXT, steps=3, rank=2, seq_len=32, batch_size=2)
    save_pruned(res.model, tok, tmp_path / "h")
    back, _ = load_pruned(tmp_path / "h")
    x = torch.randint(3, 250, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, res.model(x).logits, atol=1e-6, rtol=1e-6)


def test_heal_cancel_and_errors():
    m = tiny_model("llama", layers=2)
    tok = tiny_tokenizer()

    def stop(step, total, loss):
        raise KeyboardInterrupt

    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(KeyboardInterrupt):
        heal(m, tok, TEXT, steps=5, seq_len=32, batch_size=1, callback=stop)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    with pytest.raises(LacoError, match="tokens"):
        heal(m, tok, "tiny", steps=1, seq_len=64)


def test_distillation_from_the_dense_model_lowers_kl():
    from laco_core.heal import distill_loss
    from laco_core.ops import build_collapsed

    tok = tiny_tokenizer()
    dense = tiny_model("llama", layers=6)
    dense.requires_grad_(False)
    student = build_collapsed(dense, [(2, 4)], "drop")
    batch = tok(TEXT, return_tensors="pt").input_ids[:, :32]
    res = heal(
        student, tok, TEXT, steps=20, rank=4, lr=5e-3, seq_len=32, batch_size=2, teacher=dense
    )
    with torch.no_grad():
        assert distill_loss(res.model, dense, batch) < distill_loss(student, dense, batch)
    with pytest.raises(LacoError, match="tokenizer"):
        heal(student, tok, TEXT, steps=1, teacher=tiny_model("llama", layers=2, vocab_size=300))


def test_sampled_text_from_the_teacher_extends_the_training_text():
    from laco_core.ops import build_collapsed
    from laco_core.sampling import openings, sampled_texts

    tok = tiny_tokenizer()
    dense = tiny_model("llama", layers=4)
    dense.requires_grad_(False)
    assert openings("one two three four five six\n\nseven eight", words=3) == [
        "one two three",
        "seven eight",
    ]
    texts = sampled_texts(dense, tok, ["the cat", "a dog sat"], 5, max_new_tokens=12, batch_size=2)
    assert len(texts) == 5 and texts[0].startswith("the cat") and texts[1].startswith("a dog sat")
    assert all(len(tok(t).input_ids) > len(tok("a dog sat").input_ids) for t in texts)
    again = sampled_texts(dense, tok, ["the cat", "a dog sat"], 5, max_new_tokens=12, batch_size=2)
    assert again == texts  # seeded
    student = build_collapsed(dense, [(1, 2)], "drop")
    res = heal(student, tok, TEXT, steps=2, rank=2, seq_len=32, teacher=dense, self_text=3)
    assert len(res.losses) == 2
    with pytest.raises(LacoError, match="teacher"):
        heal(student, tok, TEXT, steps=1, seq_len=32, self_text=3)
