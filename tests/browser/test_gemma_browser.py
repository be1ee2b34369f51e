"""The app in a real Chromium loads Gemma 3 270M from the model picker (alias gemma3-270m)."""

from __future__ import annotations

import pytest

from tests.browser.pages import SHOTS, VIEWPORT, open_app, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_gemma_loads_from_the_picker(app_url, chromium):
    context = chromium.new_context(viewport=VIEWPORT)  # its own session
    try:
        page = open_app(context, app_url)  # the default model, at page load
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
