"""Shared by the reliability tests: inputs, tiny models on disk, small client helpers."""

from __future__ import annotations

from tests.helpers import save_tiny as save_tiny  # re-exported for the reliability tests

PROMPTS = "The cat sat on the mat.\nA short sentence about rivers and hills.\nNumbers: 1 2 3 4."
TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 12)
# limits of the test app: the local column, with a smaller text cap so refusals are cheap
APP_LIMITS = {"text_chars": 50_000, "builds": 40}


def load_tiny(client, path) -> dict:
    """Make ``path`` the session's base model; returns the model info."""
    _, info = client.predict(str(path), "float32", "cpu", api_name="/load_model")
    return info


def build(client, plan: str = "1-2", method: str = "official") -> dict:
    """Collapse ``plan`` of the session's base model; returns the build's JSON."""
    _, built = client.predict(plan, method, PROMPTS, api_name="/collapse")
    return built
