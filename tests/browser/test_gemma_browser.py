"""The app in a real Chromium loads Gemma 3 270M from the model picker (alias gemma3-270m)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(__file__).resolve().parents[2] / "screenshots"


def wait_text(page, selector: str, needle: str, timeout: int) -> None:
    page.wait_for_function(
        "([s, n]) => { const e = document.querySelector(s); return !!e && e.innerText.includes(n); }",
        arg=[selector, needle],
        timeout=timeout,
    )


def test_gemma_loads_from_the_picker(app_url, chromium):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})  # its own session
    try:
        page = context.new_page()
        page.goto(app_url)
        wait_text(page, "#model-summary", "30 layers", 90_000)  # the default, at page load
        page.click("#model-spec input")
        page.get_by_role("option", name="gemma3-270m", exact=True).click()
        assert page.input_value("#model-spec input") == "gemma3-270m"
        page.click("#model-load")
        # from the converted cache ~10 s; the first conversion from GGUF ~70 s more
        wait_text(page, "#model-summary", "18 layers", 240_000)
        summary = page.inner_text("#model-summary")
        assert "Gemma3ForCausalLM" in summary and "gemma3-270m" in summary
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / "gemma-model.png"), full_page=True)
    finally:
        context.close()
