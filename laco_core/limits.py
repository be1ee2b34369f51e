"""Limits on what one request may ask for, declared once and shown to users.

Input over a limit is refused before any work starts, with a message naming the limit and
the environment variable that raises it on a self-hosted instance. A hosted app (on Spaces,
or with ``LACO_HOSTED=1``) uses the stricter column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .errors import LimitExceeded


@dataclass(frozen=True)
class Limit:
    name: str
    env: str
    local: int
    hosted: int
    unit: str
    help: str


LIMITS = (
    Limit("prompt_tokens", "LACO_MAX_PROMPT_TOKENS", 4096, 1024, "tokens", "tokens in one prompt"),
    Limit("prompts", "LACO_MAX_PROMPTS", 512, 64, "prompts", "calibration prompts per request"),
    Limit("new_tokens", "LACO_MAX_NEW_TOKENS", 1024, 256, "tokens", "new tokens per answer"),
    Limit("text_chars", "LACO_MAX_TEXT_CHARS", 2_000_000, 200_000, "characters", "text to score"),
    Limit("seq_len", "LACO_MAX_SEQ_LEN", 4096, 1024, "tokens", "evaluation window"),
    Limit("builds", "LACO_MAX_BUILDS", 50, 12, "models", "models built per session"),
    Limit("upload_bytes", "LACO_MAX_UPLOAD_BYTES", 50_000_000, 5_000_000, "bytes", "upload size"),
    Limit("heal_steps", "LACO_MAX_HEAL_STEPS", 5000, 200, "steps", "LoRA steps per heal"),
)


def hosted() -> bool:
    """True on Hugging Face Spaces or with ``LACO_HOSTED=1``."""
    return os.environ.get("LACO_HOSTED", "") == "1" or bool(os.environ.get("SPACE_ID"))


@dataclass(frozen=True)
class Limits:
    """The values in force (one attribute per ``LIMITS`` entry)."""

    prompt_tokens: int
    prompts: int
    new_tokens: int
    text_chars: int
    seq_len: int
    builds: int
    upload_bytes: int
    heal_steps: int

    @classmethod
    def current(cls, is_hosted: bool | None = None) -> Limits:
        """Defaults for this deployment, each overridable by its environment variable."""
        is_hosted = hosted() if is_hosted is None else is_hosted
        values = {}
        for lim in LIMITS:
            raw = os.environ.get(lim.env)
            values[lim.name] = (
                int(raw) if raw and raw.isdigit() else (lim.hosted if is_hosted else lim.local)
            )
        return cls(**values)

    def check(self, name: str, value: int, what: str | None = None) -> None:
        """Raise ``LimitExceeded`` when ``value`` is over the limit ``name``."""
        cap = getattr(self, name)
        if value > cap:
            lim = next(x for x in LIMITS if x.name == name)
            raise LimitExceeded(
                f"{what or lim.help.capitalize()}: {value:,} {lim.unit}, over the limit of "
                f"{cap:,} ({lim.env} raises it on a self-hosted instance)."
            )

    def check_prompts(self, tokenizer, prompts: list[str], what: str = "Calibration") -> None:
        """Count and length of prompts, checked before any model work."""
        self.check("prompts", len(prompts), f"{what} prompts")
        for p in prompts:
            if len(p) > 8 * self.prompt_tokens:  # cheap bound before tokenizing huge input
                self.check("prompt_tokens", len(p) // 4, f"A {what.lower()} prompt (≈)")
            self.check("prompt_tokens", len(tokenizer(p)["input_ids"]), f"A {what.lower()} prompt")

    def table(self) -> list[tuple[str, int, str, str]]:
        """(what, value, unit, environment variable) of every limit, for the UI."""
        by_name = {x.name: x for x in LIMITS}
        return [
            (by_name[f.name].help, getattr(self, f.name), by_name[f.name].unit, by_name[f.name].env)
            for f in fields(self)
        ]
