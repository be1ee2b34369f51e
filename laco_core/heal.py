"""Recovery ("healing") of a collapsed or pruned model with LoRA (Hu et al., 2021, arXiv 2106.09685).

LoRA adapters of rank ``r`` are trained on the attention and MLP projections for a few steps of
next-token prediction on a text, then merged back (``W += B·A·α/r``) so the result is a plain
model that saves, reloads and evaluates like any other. As in LLM-Pruner's recovery stage, but
CPU-sized by default.

With a ``teacher`` (the dense model), the loss is instead the token-mean KL divergence from
the teacher's next-token distribution to the student's (logit distillation, Hinton et al.
2015, arXiv 1503.02531): every position then carries a full distribution to match rather
than one observed token, which recovers more per step on a small text.

The input model is never modified: its projection weights (what the merge writes into) are
copied first; every other tensor stays shared.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from .analysis.metrics import kl_per_token, log_probs
from .arch.adapters import get_adapter
from .arch.tokens import body_ids, encode, start_ids, with_start
from .errors import Cancelled, LacoError
from .precision import PRECISIONS, autocast
from .sampling import openings, sampled_texts

Callback = Callable[[int, int, float], None]
# the learning rate over a heal: held, or decayed along a half cosine to 0 at the end of the
# time budget or of the steps, whichever comes first, after a warm-up (Loshchilov & Hutter,
# arXiv 1608.03983)
SCHEDULES = ("constant", "cosine")
# the cosine schedule's linear warm-up, in steps: Adam's first updates are about lr per weight
# whatever the gradient's size, which a short heal cannot afford to undo
WARMUP_STEPS = 5


@dataclass
class HealResult:
    """Outcome of :func:`heal`.

    Attributes:
        model: The healed model (adapters merged, eval mode, no grad).
        losses: Training loss of every step.
        seconds: Wall time of training and merging.
        trainable_params: LoRA parameters trained.
        adapters: The trained LoRA factors (``<module>.lora_A`` / ``.lora_B``), which
            ``apply_lora`` folds into the input model again to rebuild ``model`` exactly.
        scaling: LoRA's α / r.
        curve: ``(step, validation perplexity)`` of every validation (step 0: unhealed).
        best_step: The step whose adapter ``model`` carries (None: no validation).
    """

    model: PreTrainedModel
    losses: list[float]
    seconds: float
    trainable_params: int = 0
    adapters: dict[str, torch.Tensor] = field(default_factory=dict)
    scaling: float = 2.0
    curve: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None


def lora_targets(model: PreTrainedModel) -> list[str]:
    """Module names (``q_proj``, ``gate_up_proj``…) of the projections the adapter names."""
    a = get_adapter(model)
    return sorted({n.split(".")[-2] for n in a.projections()})


def detached_copy(model: PreTrainedModel, targets: list[str]) -> PreTrainedModel:
    """A deep copy that copies only the weights of ``targets`` modules and shares the rest."""
    memo: dict[int, object] = {}
    for mod_name, module in model.named_modules():
        if mod_name.split(".")[-1] in targets:
            continue
        for t in list(module._parameters.values()) + list(module._buffers.values()):
            if t is not None:
                memo[id(t)] = t
    return copy.deepcopy(model, memo)


def load_training_text(
    text: str | None = None, dataset: str | None = None, max_chars: int = 200_000
) -> str:
    """The training text: ``text`` itself, a Hugging Face dataset's ``text`` column, or our asset.

    Raises:
        LacoError: when ``datasets`` is missing or the dataset has no text column.
    """
    if dataset:
        try:
            from datasets import load_dataset
        except ImportError as e:
            raise LacoError(
                "Training on a dataset needs the 'datasets' package: pip install datasets."
            ) from e
        ds = load_dataset(dataset, split="train", streaming=True)
        parts, size = [], 0
        for row in ds:
            value = row.get("text")
            if value is None:
                raise LacoError(
                    f"Dataset '{dataset}' has no 'text' column; give a text file instead."
                )
            parts.append(value)
            size += len(value)
            if size >= max_chars:
                break
        return "\n\n".join(parts)
    if text is None:
        from .assets import read_asset

        return "\n\n".join(read_asset("training_text"))
    return text


def heal(
    model: PreTrainedModel,
    tokenizer,
    text: str | None = None,
    steps: int = 60,
    rank: int = 8,
    lr: float = 3e-4,
    seq_len: int = 128,
    batch_size: int = 4,
    callback: Callback | None = None,
    dataset: str | None = None,
    seed: int = 0,
    teacher: PreTrainedModel | None = None,
    self_text: int = 0,
    stop: threading.Event | None = None,
    max_seconds: float | None = None,
    validation: list[str] | None = None,
    eval_every: int = 10,
    patience: int = 3,
    schedule: str = "constant",
    started: float | None = None,
    on_eval: Callable[[int, float, bool], None] | None = None,
    precision: str = "auto",
) -> HealResult:
    """Train LoRA adapters on ``text`` for ``steps`` steps and merge them back.

    Args:
        model: A collapsed, pruned or original model; left unchanged.
        tokenizer: Its tokenizer.
        text: Training text (default: both bundled training texts, disjoint from the held-out ones).
        steps: Optimizer steps (default 60: a few minutes on 2 CPU cores for the default model).
        rank: LoRA rank ``r`` (``alpha = 2r``).
        lr: AdamW learning rate.
        seq_len: Tokens per training window.
        batch_size: Windows per step, drawn at random offsets.
        callback: ``callback(step, total, loss)`` after each step.
        dataset: A Hugging Face dataset name to train on instead of ``text`` (needs ``datasets``).
        seed: Seeds the window sampling and adapter initialisation.
        teacher: The dense model to distil from (same tokenizer); None trains on the LM loss.
            Costs one extra no-grad teacher forward per step.
        self_text: With a teacher: add this many 160-token continuations sampled from it
            (opening with each paragraph's first words) to the training text.
        stop: Set from another thread to cancel between steps (raises ``Cancelled``).
        max_seconds: A time budget: training stops after the step that crosses it (at most
            ``steps`` steps). The steps taken are in ``len(result.losses)``.
        validation: Texts to score every ``eval_every`` steps (never the held-out ones);
            the adapter of the best score is the one merged.
        eval_every: Steps between validations.
        patience: Stop after this many validations in a row without a new best.
        schedule: ``constant`` or ``cosine`` (see ``SCHEDULES``); the cosine's clock is the
            larger of the training time spent out of what the budget left it and the steps
            taken out of ``steps``.
        started: ``time.perf_counter()`` the budget runs from (default: now), so work done
            before the call (sampling training text) counts in it.
        on_eval: ``on_eval(step, perplexity, is_best)`` after each validation.
        precision: The forward and backward passes' matrix products (see ``precision``):
            ``auto`` computes in bfloat16 where the hardware does natively; the adapters and
            the validation stay float32.

    Returns:
        HealResult with the merged model, the loss curve and the LoRA factors.

    Raises:
        LacoError: for a text shorter than one window or bad hyperparameters.
    """
    from peft import LoraConfig, get_peft_model

    t0 = time.perf_counter() if started is None else started
    check_hyperparameters(steps, rank, lr, seq_len, batch_size, self_text)
    if eval_every < 1 or patience < 1:
        raise LacoError("eval_every and patience must be >= 1.")
    if schedule not in SCHEDULES:
        raise LacoError(f"The schedule {schedule!r} is not one of {', '.join(SCHEDULES)}.")
    if precision not in PRECISIONS:
        raise LacoError(f"The precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    vocab = model.get_output_embeddings().weight.shape[0]
    if teacher is not None and teacher.get_output_embeddings().weight.shape[0] != vocab:
        raise LacoError("The teacher must share the model's tokenizer (its vocabulary differs).")
    text = load_training_text(text, dataset)
    if self_text:
        if teacher is None:
            raise LacoError("Sampled training text comes from the teacher: give --teacher too.")
        with autocast(precision, next(teacher.parameters()).device):
            samples = sampled_texts(teacher, tokenizer, openings(text), self_text, seed=seed)
        text = "\n\n".join([text, *samples])
    start = start_ids(tokenizer)
    body = seq_len - len(start)  # each batch row: the start ids, then ``body`` text tokens
    ids = torch.tensor(body_ids(tokenizer, text), dtype=torch.long)  # (N,)
    if ids.numel() <= seq_len:
        raise LacoError(
            f"Training text has {ids.numel()} tokens; give more than seq_len={seq_len}."
        )
    targets = lora_targets(model)
    work = detached_copy(model, targets)
    device = next(work.parameters()).device
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, bias="none"
    )
    peft_model = get_peft_model(work, config)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    best: dict[str, torch.Tensor] = {}
    best_at = 0  # index in ``curve`` of the best validation

    def validate(step: int) -> bool:
        """Score the validation texts; True when ``patience`` scores passed without a best."""
        nonlocal best, best_at
        curve.append((step, validation_ppl(peft_model, tokenizer, validation or [])))
        if curve[-1][1] < curve[best_at][1] or len(curve) == 1:
            best, best_at = lora_factors(peft_model), len(curve) - 1
        if on_eval is not None:
            on_eval(step, curve[-1][1], best_at == len(curve) - 1)
        return len(curve) - 1 - best_at >= patience

    if validation:
        validate(0)
    peft_model.train()
    train_from = time.perf_counter()
    left = None if max_seconds is None else max(t0 + max_seconds - train_from, 1e-9)
    for step in range(steps):
        if stop is not None and stop.is_set():
            raise Cancelled("The heal was cancelled.")
        if max_seconds is not None and step and time.perf_counter() - t0 >= max_seconds:
            break
        starts = torch.randint(0, ids.numel() - body, (batch_size,), generator=gen)
        rows = torch.stack([ids[s : s + body] for s in starts.tolist()])  # (B, body)
        batch = with_start(tokenizer, rows).to(device)  # (B, T)
        with autocast(precision, device):
            if teacher is None:
                loss = peft_model(input_ids=batch, labels=batch, use_cache=False).loss
            else:
                loss = distill_loss(peft_model, teacher, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        spent = (
            step / steps
            if left is None
            else max(step / steps, (time.perf_counter() - train_from) / left)
        )
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(lr, schedule, spent, step)
        opt.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step + 1, steps, losses[-1])
        if validation and (step + 1) % eval_every == 0 and validate(step + 1):
            break
    if validation and curve[-1][0] != len(losses):
        validate(len(losses))
    best_step = curve[best_at][0] if curve else None
    if best_step is not None and best_step != len(losses):
        adapters = best
        merged = apply_lora(model, adapters, 2.0)
    else:
        adapters = lora_factors(peft_model)
        merged = peft_model.merge_and_unload()
    merged.eval()
    merged.requires_grad_(False)
    trained, seconds = sum(p.numel() for p in trainable), time.perf_counter() - t0
    return HealResult(merged, losses, seconds, trained, adapters, 2.0, curve, best_step)


def scheduled_lr(lr: float, schedule: str, spent: float, step: int) -> float:
    """The learning rate of ``schedule`` at (0-based) ``step``, once ``spent`` (0..1) of the
    heal has passed."""
    if schedule == "cosine":
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        return warm * lr * 0.5 * (1 + math.cos(math.pi * min(max(spent, 0.0), 1.0)))
    return lr


@torch.no_grad()
def validation_ppl(model, tokenizer, texts: list[str], max_len: int = 512) -> float:
    """Perplexity over ``texts``, each scored whole from its start (as the tokenizer starts
    a text), up to ``max_len`` tokens."""
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for text in texts:
        ids = encode(tokenizer, text, max_len)
        batch = torch.tensor([ids], device=next(model.parameters()).device)  # (1, T)
        logits = model(input_ids=batch, use_cache=False).logits[0, :-1].float()  # (T-1, V)
        nll += float(torch.nn.functional.cross_entropy(logits, batch[0, 1:], reduction="sum"))
        count += batch.shape[1] - 1
    model.train(was_training)
    return math.exp(nll / max(count, 1))


def check_hyperparameters(
    steps: int, rank: int, lr: float, seq_len: int, batch_size: int, self_text: int = 0
) -> None:
    """Refuse values that cannot train (one clear message each)."""
    if steps < 1 or rank < 1 or batch_size < 1 or seq_len < 2:
        raise LacoError("steps, rank and batch size must be >= 1 and seq_len >= 2.")
    if not (math.isfinite(lr) and 0 < lr <= 1):
        raise LacoError(f"--lr {lr} must be a learning rate in (0, 1], e.g. 2e-3.")
    if self_text < 0:
        raise LacoError("--self-text is a number of samples, at least 0.")


def lora_factors(peft_model) -> dict[str, torch.Tensor]:
    """``<module path>.lora_A`` / ``.lora_B`` of every adapted module, detached copies."""
    out = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            path = name.removeprefix("base_model.model.")
            out[f"{path}.lora_A"] = module.lora_A["default"].weight.detach().clone()
            out[f"{path}.lora_B"] = module.lora_B["default"].weight.detach().clone()
    return out


@torch.no_grad()
def apply_lora(
    model: PreTrainedModel, adapters: dict[str, torch.Tensor], scaling: float
) -> PreTrainedModel:
    """Fold LoRA factors into a copy of ``model`` (W += B·A·scaling), as peft's merge does.

    The input model is left unchanged: only the adapted projections are copied.
    """
    paths = sorted({k.rsplit(".", 1)[0] for k in adapters})
    targets = sorted({p.rsplit(".", 1)[-1] for p in paths})
    work = detached_copy(model, targets)
    for path in paths:
        linear = work.get_submodule(path)
        a, b = adapters[f"{path}.lora_A"], adapters[f"{path}.lora_B"]
        w = linear.weight
        a, b = a.to(w.device, w.dtype), b.to(w.device, w.dtype)
        half_on_cpu = w.device.type == "cpu" and w.dtype in (torch.float16, torch.bfloat16)
        if half_on_cpu:  # as peft computes the delta
            a, b = a.float(), b.float()
        delta = ((b @ a) * scaling).to(w.dtype)
        w.data += delta
    work.eval()
    work.requires_grad_(False)
    return work


def distill_loss(student, teacher: PreTrainedModel, batch: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(p_teacher ‖ p_student) of the next-token distributions."""
    with torch.no_grad():
        ref = log_probs(teacher(input_ids=batch, use_cache=False).logits)  # (B, T, V)
    logp = log_probs(student(input_ids=batch, use_cache=False).logits)  # (B, T, V)
    return kl_per_token(ref, logp).mean()


__all__ = [
    "SCHEDULES",
    "HealResult",
    "apply_lora",
    "detached_copy",
    "distill_loss",
    "heal",
    "load_training_text",
    "lora_targets",
    "scheduled_lr",
    "validation_ppl",
]
