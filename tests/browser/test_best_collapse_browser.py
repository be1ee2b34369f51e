""" "★ Best collapse" in a real Chromium on the default model: remove 1 layer (the smallest
target, to keep it bounded), watch the size–quality curve appear beside the log, read the
sizes three ways; a screenshot of the panel goes to ``screenshots/best-collapse-curve.png``."""

from __future__ import annotations

import time

import pytest

from tests.browser.pages import SHOTS, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_best_collapse_by_layers_draws_the_size_quality_curve(page):
    page.get_by_role("tab", name="3 · Collapse").click()
    page.locator("#best-unit input").click()
    page.get_by_role("option", name="layers", exact=True).click()
    page.fill("#best-value input", "1")
    page.press("#best-value input", "Enter")
    wait_text(page, "#best-run", "remove 1 layer", 10_000)
    t0 = time.perf_counter()
    page.click("#best-run")
    # the curve's place appears at once, with the target marked; it fills as the walk goes
    page.wait_for_selector("#best-curve .js-plotly-plot", timeout=30_000)
    wait_text(page, "#best-result", "remove 1 layer in", 600_000)
    seconds = time.perf_counter() - t0
    result = page.inner_text("#best-result")
    assert "30 → 29 layers" in result and "of the layer parameters" in result
    assert "of all parameters" in result and "Validation perplexity" in result
    traces = page.evaluate(
        "() => document.querySelector('#best-curve .js-plotly-plot').data.map(t => t.name)"
    )
    assert "searched plan" in traces and "built" in traces
    page.locator("#best-curve").scroll_into_view_if_needed()
    time.sleep(0.5)
    page.screenshot(path=str(SHOTS / "best-collapse-curve.png"), full_page=True)
    print(f"best collapse by 1 layer on the default model, in the browser: {seconds:.0f} s")
