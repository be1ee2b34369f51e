"""Step kind ``heal``: LoRA recovery, on the LM loss or distilled from the base model.

The default is self-data distillation (arXiv 2410.09982): KL to the dense model's next-token
distribution on the training text plus continuations the dense model samples itself (cached on
disk per base model, so a second heal does not pay for them), with a validation stop on the
training texts' validation slice: the best adapter is kept, and the heal ends when the slice
stops improving or the time budget (sampling included) is spent.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field, replace

from ..assets import read_asset
from ..errors import LacoError
from ..heal import SCHEDULES, apply_lora, heal
from ..loading.gguf_cache import cache_root
from ..loading.limits import Limits
from ..params import ParamDef
from ..precision import PRECISIONS, autocast, uses_bf16
from ..recipe import Step, TextSource
from ..sampling import openings, sampled_texts
from ..search.curve import validation_source

# the training texts less their validation slice, so the validation stop is not trained on
DEFAULT_TEXT = "fit_paragraphs"
SAMPLE_TOKENS = 160  # tokens per sampled continuation
SAMPLE_BATCH = 64  # continuations generated at once
# sampling may use this share of a heal's budget (at least one batch); the rest trains. What
# was sampled is cached, so the next heal of a model of the same base continues from it.
SAMPLING_SHARE = 0.5

HEAL_PARAMS = (
    ParamDef("seconds", "float", 300.0, 0, None, help="time budget, sampling included (> 0)"),
    # rank 16 and lr 2e-3: the best measured distilled heal at 20 % (docs/findings.md)
    ParamDef("rank", "int", 16, 1, 256, help="LoRA rank r (alpha = 2r)"),
    ParamDef("lr", "float", 2e-3, 1e-8, 1, help="AdamW learning rate, in (0, 1]"),
    ParamDef(
        "self_text",
        "int",
        128,
        0,
        4096,
        help="continuations sampled from the dense model added to the training text",
    ),
    ParamDef(
        "schedule",
        "choice",
        "constant",
        choices=SCHEDULES,
        help="learning rate: constant, or a 5-step warm-up then cosine decay to 0 at the end",
    ),
    ParamDef(
        "precision",
        "choice",
        "auto",
        choices=PRECISIONS,
        help="matrix products of training and sampling: auto = bfloat16 where the hardware "
        "computes it natively (weights stay float32), else float32",
    ),
    ParamDef("eval_every", "int", 10, 1, 10_000, help="steps between validation scores"),
    ParamDef(
        "patience",
        "int",
        3,
        1,
        1000,
        help="stop after this many validation scores in a row without a new best",
    ),
)
DEFAULTS = {d.name: d.default for d in HEAL_PARAMS}


def model_key(model) -> str:
    """A short fingerprint of a model's weights and name (what sampled text depends on)."""
    emb = model.get_input_embeddings().weight
    head = float(emb.detach().flatten()[:4096].double().sum())
    n = sum(p.numel() for p in model.parameters())
    name = getattr(model.config, "_name_or_path", "")
    return hashlib.sha1(f"{name}:{n}:{head:.9g}".encode()).hexdigest()[:12]


def cached_samples(
    teacher,
    tokenizer,
    seeds: list[str],
    count: int,
    seed: int,
    deadline: float | None = None,
    precision: str = "auto",
) -> tuple[list[str], int]:
    """``(texts, cached)``: up to ``count`` continuations sampled from ``teacher`` (see
    ``sampling.sampled_texts``), the first ``cached`` of them read from the cache an earlier heal
    wrote. Sampling stops at ``deadline`` (after one batch at least); what was drawn is cached,
    so the next heal of a model of this base continues from it. ``precision``: as the heal's
    (bfloat16 samples differ from float32 ones, so each has its own cache)."""
    device = next(teacher.parameters()).device
    bf16 = uses_bf16(precision, device)
    what = json.dumps([model_key(teacher), seeds, count, seed, SAMPLE_TOKENS, SAMPLE_BATCH, bf16])
    key = hashlib.sha1(what.encode()).hexdigest()[:16]
    path = cache_root() / "heal-samples" / f"{key}.json"
    have: list[str] = []
    if path.is_file():
        try:
            read = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(read, list) and all(isinstance(t, str) for t in read):
                have = read[:count]
        except (OSError, ValueError):
            pass  # a broken cache file is sampled again
    if len(have) < count:  # a list cut short by a deadline holds whole batches
        have = have[: len(have) - len(have) % SAMPLE_BATCH]
    if len(have) == count:
        return have, count
    with autocast(precision, device):
        more = sampled_texts(
            teacher, tokenizer, seeds, count, SAMPLE_TOKENS, SAMPLE_BATCH, seed, len(have), deadline
        )
    texts = have + more
    try:  # atomically: a crash never leaves half a file behind
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(texts), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs time
    return texts, len(have)


@dataclass
class HealStep(Step):
    """Train LoRA adapters for ``steps`` steps (or until ``seconds`` have passed) and merge
    them; ``adapters`` records the LoRA factors (stored as tensors beside the recipe), so the
    step replays exactly, and ``steps`` becomes the number of steps actually taken. With a
    ``validation`` text the adapter of the best validation score (``best_step``) is kept."""

    kind = "heal"
    not_passthrough = "a LoRA heal changes the weights of the layers it adapts"
    bounded = (("heal_steps", "steps", "Heal steps"), ("seq_len", "seq_len", "The heal window"))
    summary = "LoRA recovery (KL distillation from the base model on its own samples, or LM loss)."
    nested = {"text": TextSource, "validation": TextSource}
    params = HEAL_PARAMS

    steps: int = 60
    rank: int = DEFAULTS["rank"]
    lr: float = DEFAULTS["lr"]
    seq_len: int = 128
    batch_size: int = 4
    seed: int = 0
    teacher: bool = True
    self_text: int = DEFAULTS["self_text"]
    schedule: str = DEFAULTS["schedule"]
    precision: str = DEFAULTS["precision"]
    seconds: float | None = None
    text: TextSource | None = None
    adapters: dict | None = None
    scaling: float | None = None
    losses: list[float] | None = None
    validation: TextSource | None = field(default_factory=validation_source)
    eval_every: int = DEFAULTS["eval_every"]
    patience: int = DEFAULTS["patience"]
    validation_curve: list | None = None
    best_step: int | None = None

    def describe(self) -> str:
        how = "distilled" if self.teacher else "LM loss"
        if self.teacher and self.self_text:
            how += f" + {self.self_text} samples"
        if self.schedule != DEFAULTS["schedule"]:
            how += f", {self.schedule} lr"
        budget = f", ≤ {self.seconds:.0f} s" if self.seconds else ""
        best = f", best at step {self.best_step}" if self.best_step is not None else ""
        return f"heal {self.steps} steps r={self.rank} ({how}{budget}{best})"

    def apply(self, model, ctx):
        if self.adapters and all(t is not None for t in self.adapters.values()):
            return apply_lora(model, self.adapters, self.scaling or 2.0), self
        started = time.perf_counter()
        text = self.text or TextSource.of(read_asset(DEFAULT_TEXT), DEFAULT_TEXT)
        train = "\n\n".join(text.resolve())
        teacher = ctx.base.model if self.teacher else None
        hit, drawn = None, self.self_text
        if teacher is not None and self.self_text:
            ctx.report(0.0, f"Sampling {self.self_text} continuations from the dense model")
            deadline = started + SAMPLING_SHARE * self.seconds if self.seconds else None
            samples, hit = cached_samples(
                teacher,
                ctx.tokenizer,
                openings(train),
                self.self_text,
                self.seed,
                deadline,
                self.precision,
            )
            drawn, took = len(samples), time.perf_counter() - started
            ctx.event(
                {
                    "samples": drawn,
                    "asked": self.self_text,
                    "cached": hit,
                    "seconds": took,
                    "budget": self.seconds,
                }
            )
            train = "\n\n".join([train, *samples])
        valid = self.validation

        def step_done(step: int, total: int, loss: float) -> None:
            ctx.event({"step": step, "total": total, "loss": loss})
            ctx.report(step / total, f"LoRA step {step}/{total}, loss {loss:.3f}")

        def scored(step: int, ppl: float, best: bool) -> None:
            ctx.event({"valid_step": step, "valid_ppl": ppl, "best": best})

        res = heal(
            model,
            ctx.tokenizer,
            train,
            steps=self.steps,
            rank=self.rank,
            lr=self.lr,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            callback=step_done,
            seed=self.seed,
            teacher=teacher,
            stop=ctx.stop,
            max_seconds=self.seconds,
            validation=valid.resolve() if valid is not None else None,
            eval_every=self.eval_every,
            patience=self.patience,
            schedule=self.schedule,
            precision=self.precision,
            started=started,
            on_eval=scored,
        )
        done = replace(
            self,
            steps=len(res.losses),
            seconds=None,
            self_text=drawn,  # what it trained on: fewer when the budget cut the sampling
            text=text,
            adapters=res.adapters,
            scaling=res.scaling,
            losses=[round(x, 5) for x in res.losses],
            validation_curve=[[s, round(p, 4)] for s, p in res.curve] or None,
            best_step=res.best_step,
        )
        res.samples_cached = hit  # read from the cache; None: nothing sampled
        done.result = res
        return res.model, done


def default_heal(seconds: float, max_steps: int | None = None, **fields) -> HealStep:
    """The default heal within ``seconds``: distilled from the base model on the training
    text and the dense model's own samples, stopped on the validation slice (at most
    ``max_steps`` steps; default: as many as the limits allow, the budget decides)."""
    check_budget(seconds)
    steps = max_steps or Limits.current().heal_steps
    return HealStep(steps, seconds=seconds, **fields)


def check_budget(seconds: float | None) -> None:
    """Refuse a budget that cannot train (zero, negative, not a number)."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise LacoError(f"A heal budget of {seconds:g} s cannot train: give seconds above 0.")
