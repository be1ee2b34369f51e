"""A heal step's events on a job's bar: the samples drawn, each LoRA step against the time
budget (the unit the heal stops on, so the ETA is the budget left; the validation stop may end
it sooner), and each validation score."""

from __future__ import annotations

import time

from . import jobs


class HealProgress:
    """Feeds a heal step's events (``steps.heal.HealStep.apply``) to ``job``; ``seconds``
    is the heal's budget, sampling included."""

    def __init__(self, job: jobs.Job, seconds: float | None):
        self.job, self.seconds, self.started = job, seconds, None

    def __call__(self, e: dict) -> bool:
        """True when ``e`` was a heal event (and is shown), False for anything else."""
        now = time.monotonic()
        if "samples" in e and "asked" in e:
            self.started = now - float(e.get("seconds") or 0)
            cached = f", {e['cached']} from the cache" if e.get("cached") else ""
            self.job.progress(
                None,
                f"Heal: {e['samples']} of {e['asked']} continuations sampled from the dense "
                f"model{cached} in {jobs.duration(e.get('seconds') or 0)}",
            )
            return True
        if "loss" in e and "step" in e:
            self.started = self.started or now
            desc = f"Heal: LoRA step {e['step']}, loss {e['loss']:.3f}"
            if self.seconds:
                spent = min(now - self.started, self.seconds)
                self.job.count(int(spent), int(self.seconds), "heal seconds", desc, "Heal", True)
            else:
                self.job.count(e["step"], e.get("total"), "LoRA steps", desc, "Heal", True)
            return True
        if "valid_ppl" in e:
            best = " (best so far)" if e.get("best") else ""
            self.job.progress(
                None,
                f"Heal: validation perplexity {e['valid_ppl']:.2f} at step {e['valid_step']}"
                + best,
            )
            return True
        return False

    def report(self, fraction: float | None, desc: str | None = None) -> None:
        """The job's progress callback: once the heal counts its budget, the step's own
        share of its step limit (which the budget, not the limit, ends) is left off."""
        self.job.progress(None if self.started else fraction, None if self.started else desc)


def heal_md(recipe: dict) -> str:
    """One line on the heal a build's recipe ends with ('' without one)."""
    steps = recipe.get("steps", []) if isinstance(recipe, dict) else []
    heal = next((s for s in reversed(steps) if "validation_curve" in s), None)
    if heal is None:
        return ""
    curve = [p for p in heal.get("validation_curve") or [] if len(p) == 2]
    n = heal.get("steps", "?")
    line = f"Healed: {n} LoRA step{'' if n == 1 else 's'} (r={heal.get('rank', '?')})"
    if heal.get("self_text"):
        line += f" on the training text and {heal['self_text']} of the dense model's own samples"
    best = min(curve, key=lambda p: p[1]) if curve else None
    if best is not None and best[0] == 0:
        line += (
            f"; no step scored below the unhealed {best[1]:.2f} on the training texts' "
            "validation slice, so the model is kept as the collapse left it"
        )
    elif best is not None:
        line += (
            f"; the adapter of step {best[0]} kept: validation perplexity {curve[0][1]:.2f} → "
            f"**{best[1]:.2f}** on the training texts' validation slice"
        )
    return line + "."


__all__ = ["HealProgress", "heal_md"]
