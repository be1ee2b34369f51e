""" "★ Best collapse" in a real Chromium on the default model: remove 1 layer (the smallest
target, to keep it bounded), watch the size–quality curve appear beside the log, read the
sizes three ways; a screenshot of the panel goes to ``screenshots/best-collapse-curve.png``.

Its progress is honest: units of work are counted within the first 10 s, and within the
search's step the ETA (read from the job itself) never grows by more than 25 %. The result's
link opens the Collapse tab of a new page with the searched plan drawn. Stop is
disabled while nothing runs, reads "stopping…" once pressed, and a stopped run leaves the
previous result on the page."""

from __future__ import annotations

import re
import time
from itertools import groupby, pairwise

import pytest

from components import jobs
from tests.browser.pages import SHOTS, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]
STOP = "#best-stop"


def best_job(timeout: float = 10.0) -> jobs.Job:
    """The running "★ Best collapse" job of this app (the app runs in this process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with jobs._LOCK:
            found = [j for (_, panel), js in jobs._RUNNING.items() if panel == "best" for j in js]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no best-collapse job started")


def stop_enabled(page) -> bool:
    return page.locator(f"{STOP}, {STOP} button").first.is_enabled()


def test_best_collapse_by_layers_draws_the_size_quality_curve(page):
    page.get_by_role("tab", name="3 · Collapse").click()
    page.locator("#best-unit input").click()
    page.get_by_role("option", name="layers", exact=True).click()
    page.fill("#best-value input", "1")
    page.press("#best-value input", "Enter")
    wait_text(page, "#best-run", "remove 1 layer", 10_000)
    assert not stop_enabled(page)  # nothing runs yet
    t0 = time.perf_counter()
    page.click("#best-run")
    job = best_job()
    while not (job.counter and job.counter.done) and time.perf_counter() - t0 < 10:
        time.sleep(0.1)
    first_units = time.perf_counter() - t0
    assert job.counter is not None and job.counter.done >= 1, "no unit counted in 10 s"
    page.wait_for_function(
        "s => { const b = document.querySelector(s); return !!b && !b.disabled; }",
        arg=f"button{STOP}",
        timeout=10_000,
    )
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

    # its link (the recipe's steps, no weights) opens the Collapse tab with the plan drawn
    wait_text(page, "#best-link", "Copy link", 10_000)
    link = page.locator("#best-link a.laco-share-url").get_attribute("href")
    assert "?recipe=" in link
    other = page.context.new_page()
    other.goto(link)
    wait_text(other, "#plan-msg", "Opened from a link", 90_000)
    assert other.get_by_role("tab", name="3 · Collapse").get_attribute("aria-selected") == "true"
    plan = other.input_value("#plan textarea, #plan input")
    assert re.fullmatch(r"\d+-\d+", plan) and f"plan {plan}" in result, (plan, result)
    other.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 1",
        timeout=60_000,
    )
    other.screenshot(path=str(SHOTS / "opened-from-result-link-1400.png"))
    other.close()

    # the ETA at each candidate scored, from the measured rate: never up by > 25 % in a step
    steps = {
        stage: [eta for *_, eta in rows if eta is not None]
        for stage, rows in groupby(job.history, key=lambda h: h[0])
        if stage.startswith("Step")
    }
    assert steps and all(len(etas) >= 10 for etas in steps.values()), steps
    growth = max(b / a for etas in steps.values() for a, b in pairwise(etas) if a > 0)
    assert growth <= 1.25, steps
    page.wait_for_function(
        "s => { const b = document.querySelector(s); return !!b && b.disabled; }",
        arg=f"button{STOP}",
        timeout=10_000,
    )

    # a second run, stopped: "stopping…", then the previous result is still there
    page.click("#best-run")
    page.wait_for_function(
        "s => { const b = document.querySelector(s); return !!b && !b.disabled; }",
        arg=f"button{STOP}",
        timeout=10_000,
    )
    page.evaluate(  # every label the button shows from now on, even one that lasts one frame
        """s => { window.stopTexts = [];
        const keep = n => n && window.stopTexts.push(n.textContent ?? '');
        new MutationObserver(ms => { for (const m of ms) {
            const t = m.target.nodeType === 1 ? m.target : m.target.parentElement;
            const b = t?.closest(s);
            if (b) {  // a change inside the button: its old text, what came and went, and now
                if (m.oldValue != null) window.stopTexts.push(m.oldValue);
                m.addedNodes.forEach(keep); m.removedNodes.forEach(keep); keep(b);
            } else m.addedNodes.forEach(n => n.nodeType === 1 &&  // the button drawn anew
                keep(n.matches(s) ? n : n.querySelector(s)));
        } }).observe(document.body, {childList: true, subtree: true, characterData: true,
                                     characterDataOldValue: true}); }""",
        f"button{STOP}",
    )
    page.click(STOP)
    wait_text(page, "#best-bar", "Stopped", 60_000)
    wait_text(page, f"button{STOP}", "Stop", 10_000)
    labels = page.evaluate("() => window.stopTexts")
    assert not stop_enabled(page) and any("stopping…" in t for t in labels), labels
    assert page.inner_text("#best-result") == result  # the previous result stays
    page.screenshot(path=str(SHOTS / "best-collapse-stopped.png"), full_page=False)
    print(
        f"best collapse by 1 layer on the default model, in the browser: {seconds:.0f} s; "
        f"first units counted after {first_units:.1f} s; largest ETA step within a step "
        f"×{growth:.2f}"
    )
