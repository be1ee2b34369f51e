"""Limits on what one request may ask for, declared once and shown to users.

Input over a limit is refused before any work starts, with a message naming the limit and
the environment variable that raises it on a self-hosted instance. A hosted app (on Spaces,
or with ``LACO_HOSTED=1``) uses the stricter column. The CLI applies the same limits (the
local column), so a script meets the same bounds as the app.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields

from ..errors import LacoError, LimitExceeded


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
    # the search keeps every layer's input for every calibration token: L × tokens × hidden
    Limit(
        "calibration_tokens",
        "LACO_MAX_CALIBRATION_TOKENS",
        32768,
        8192,
        "tokens",
        "calibration tokens per request, all prompts together",
    ),
    Limit("new_tokens", "LACO_MAX_NEW_TOKENS", 1024, 256, "tokens", "new tokens per answer"),
    Limit("text_chars", "LACO_MAX_TEXT_CHARS", 2_000_000, 200_000, "characters", "text to score"),
    Limit("seq_len", "LACO_MAX_SEQ_LEN", 4096, 1024, "tokens", "evaluation window"),
    Limit("builds", "LACO_MAX_BUILDS", 50, 12, "models", "models built per session"),
    Limit("long_jobs", "LACO_MAX_LONG_JOBS", 1, 1, "jobs", "long jobs running at once per session"),
    Limit("upload_bytes", "LACO_MAX_UPLOAD_BYTES", 50_000_000, 5_000_000, "bytes", "upload size"),
    Limit("heal_steps", "LACO_MAX_HEAL_STEPS", 5000, 200, "steps", "LoRA steps per heal"),
    Limit(
        "model_params",
        "LACO_MAX_MODEL_PARAMS",
        100_000_000_000,
        2_000_000_000,
        "parameters",
        "parameters of a model to load",
    ),
    Limit(
        "export_mb",
        "LACO_MAX_EXPORT_MB",
        20_000,
        4_000,
        "MB",
        "disk kept for downloadable exports (oldest removed first)",
    ),
    Limit(
        "export_ttl_s",
        "LACO_EXPORT_TTL_S",
        3600,
        1800,
        "seconds",
        "time an export stays on the server",
    ),
)
BY_NAME = {x.name: x for x in LIMITS}


def hosted() -> bool:
    """True on Hugging Face Spaces or with ``LACO_HOSTED=1``."""
    return os.environ.get("LACO_HOSTED", "") == "1" or bool(os.environ.get("SPACE_ID"))


def _env_int(lim: Limit, raw: str) -> int:
    """An environment value as a whole number ≥ 0 (``1e9`` and ``1_000`` accepted)."""
    try:
        value = float(raw.replace("_", "").strip())
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value == int(value)):
        raise LacoError(f"{lim.env}={raw!r} is not a whole number ≥ 0 ({lim.help}).")
    return int(value)


@dataclass(frozen=True)
class Limits:
    """The values in force (one attribute per ``LIMITS`` entry)."""

    prompt_tokens: int
    prompts: int
    calibration_tokens: int
    new_tokens: int
    text_chars: int
    seq_len: int
    builds: int
    long_jobs: int
    upload_bytes: int
    heal_steps: int
    model_params: int
    export_mb: int
    export_ttl_s: int
    is_hosted: bool = False

    @classmethod
    def current(cls, is_hosted: bool | None = None) -> Limits:
        """Defaults for this deployment, each overridable by its environment variable.

        Raises:
            LacoError: for an environment value that is not a whole number.
        """
        is_hosted = hosted() if is_hosted is None else is_hosted
        values = {}
        for lim in LIMITS:
            raw = os.environ.get(lim.env)
            values[lim.name] = (
                _env_int(lim, raw) if raw else (lim.hosted if is_hosted else lim.local)
            )
        return cls(**values, is_hosted=is_hosted)

    def replace(self, **changes) -> Limits:
        """A copy with some values changed (tests, benchmarks)."""
        return dataclasses.replace(self, **changes)

    def check(self, name: str, value: int | float, what: str | None = None) -> None:
        """Raise ``LimitExceeded`` when ``value`` is over the limit ``name``."""
        cap = getattr(self, name)
        if value > cap:
            lim = BY_NAME[name]
            raise LimitExceeded(
                f"{what or lim.help.capitalize()}: {value:,} {lim.unit}, over the limit of "
                f"{cap:,} ({lim.env} raises it on a self-hosted instance)."
            )

    def check_prompts(self, tokenizer, prompts: list[str], what: str = "Calibration") -> None:
        """Count, length and total tokens of prompts, checked before any model work."""
        self.check("prompts", len(prompts), f"{what} prompts")
        total = 0
        for p in prompts:
            # no tokenizer averages 32 characters a token: refuse huge input before tokenizing
            if len(p) > 32 * self.prompt_tokens:
                self.check("prompt_tokens", len(p) // 32, f"A {what.lower()} prompt (at least)")
            n = len(tokenizer(p)["input_ids"])
            self.check("prompt_tokens", n, f"A {what.lower()} prompt")
            total += n
        self.check("calibration_tokens", total, f"{what} prompts in total")

    def check_prompt(self, tokenizer, prompt: str, what: str = "The prompt") -> None:
        """One prompt to generate from: its length in tokens."""
        if len(prompt) > 32 * self.prompt_tokens:
            self.check("prompt_tokens", len(prompt) // 32, f"{what} (at least)")
        self.check("prompt_tokens", len(tokenizer(prompt)["input_ids"]), what)

    def check_text(self, text: str, what: str = "The text") -> None:
        """A text to score or train on: its length in characters."""
        self.check("text_chars", len(text), what)

    def check_step(self, step, tokenizer) -> None:
        """The inputs a recipe step carries (inline texts, heal steps, window length).

        Duck-typed on the step's fields, so every step kind is covered without this module
        knowing them: a field holding inline ``texts`` is calibration (or, for a step's
        ``text`` field, training text); ``steps`` and ``seq_len`` of a heal are bounded too.
        """
        for f in fields(step) if dataclasses.is_dataclass(step) else ():
            value = getattr(step, f.name, None)
            texts = getattr(value, "texts", None)
            if isinstance(texts, list) and getattr(value, "asset", None) is None:
                if f.name == "text":
                    self.check_text("".join(texts), "The training text")
                else:
                    self.check_prompts(tokenizer, texts)
        for limit, name, what in getattr(step, "bounded", ()):
            self.check(limit, int(getattr(step, name, 0) or 0), what)

    def table(self) -> list[tuple[str, int, str, str]]:
        """(what, value, unit, environment variable) of every limit, for the UI."""
        return [
            (BY_NAME[f.name].help, getattr(self, f.name), BY_NAME[f.name].unit, BY_NAME[f.name].env)
            for f in fields(self)
            if f.name in BY_NAME
        ]
