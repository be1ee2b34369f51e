"""Step kind ``heal``: LoRA recovery, on the LM loss or distilled from the base model."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..assets import read_asset
from ..heal import apply_lora, heal
from ..recipe import Step, TextSource

DEFAULT_TEXT = "training_text"  # both bundled training texts


@dataclass
class HealStep(Step):
    """Train LoRA adapters for ``steps`` steps (or until ``seconds`` have passed) and merge
    them; ``adapters`` records the LoRA factors (stored as tensors beside the recipe), so the
    step replays exactly, and ``steps`` becomes the number of steps actually taken."""

    kind = "heal"
    not_passthrough = "a LoRA heal changes the weights of the layers it adapts"
    bounded = (("heal_steps", "steps", "Heal steps"), ("seq_len", "seq_len", "The heal window"))
    summary = "LoRA recovery (LM loss, or KL distillation from the base model)."
    nested = {"text": TextSource}

    steps: int = 60
    rank: int = 8
    lr: float = 3e-4
    seq_len: int = 128
    batch_size: int = 4
    seed: int = 0
    teacher: bool = False
    self_text: int = 0
    seconds: float | None = None
    text: TextSource | None = None
    adapters: dict | None = None
    scaling: float | None = None
    losses: list[float] | None = None

    def describe(self) -> str:
        how = "distilled" if self.teacher else "LM loss"
        budget = f", ≤ {self.seconds:.0f} s" if self.seconds else ""
        return f"heal {self.steps} steps r={self.rank} ({how}{budget})"

    def apply(self, model, ctx):
        if self.adapters and all(t is not None for t in self.adapters.values()):
            return apply_lora(model, self.adapters, self.scaling or 2.0), self
        text = self.text or TextSource.of(read_asset(DEFAULT_TEXT), DEFAULT_TEXT)

        def step_done(step: int, total: int, loss: float) -> None:
            ctx.event({"step": step, "total": total, "loss": loss})
            ctx.report(step / total, f"LoRA step {step}/{total}, loss {loss:.3f}")

        res = heal(
            model,
            ctx.tokenizer,
            "\n\n".join(text.resolve()),
            steps=self.steps,
            rank=self.rank,
            lr=self.lr,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            callback=step_done,
            seed=self.seed,
            teacher=ctx.base.model if self.teacher else None,
            self_text=self.self_text,
            stop=ctx.stop,
            max_seconds=self.seconds,
        )
        done = replace(
            self,
            steps=len(res.losses),
            seconds=None,
            text=text,
            adapters=res.adapters,
            scaling=res.scaling,
            losses=[round(x, 5) for x in res.losses],
        )
        done.result = res
        return res.model, done
