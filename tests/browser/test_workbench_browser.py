"""The workbench in a real Chromium: the plan on the Collapse heatmap (a rubber band while
dragging), inline errors, a link that opens the plan, a 3-way compare, the session and the page
(an unbuilt plan, the method, the tab, the prompt) kept across a reload, the page at 800 px,
screenshots of every tab.

Measured figures (click → drawn rectangle, reload → restored session) are printed and written
to ``screenshots/timings.txt``.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from components import session_panel
from components.state import Session
from tests.browser.pages import SHOTS, VIEWPORT, open_app, quick_words, settled, wait_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TABS = ["1 · Model", "2 · Similarity", "3 · Collapse", "4 · Compare", "5 · Evaluate", "6 · Export"]
PLAN = "#plan textarea, #plan input"
BAND = "#plan-map .laco-drag-box"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def context(app_url, chromium):
    SHOTS.mkdir(exist_ok=True)
    ctx = chromium.new_context(viewport=VIEWPORT)
    yield ctx
    (SHOTS / "timings.txt").write_text(
        "".join(f"{k}: {v:.2f} s\n" for k, v in TIMINGS.items()), encoding="utf-8"
    )
    ctx.close()


@pytest.fixture(scope="module")
def page(context, app_url):
    return open_app(context, app_url)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    time.sleep(0.4)


@contextmanager
def stored_change(page, timeout: int = 30_000):
    """Wait until what the action in the block changed is written to this browser's storage
    (the page keeps the session there, encrypted, after the server has seen the change)."""
    key = session_panel.STORAGE_KEY
    before = page.evaluate("k => localStorage.getItem(k)", key)
    yield
    page.wait_for_function(
        "([k, v]) => localStorage.getItem(k) !== v", arg=[key, before], timeout=timeout
    )


def squares(page) -> int:
    return page.evaluate("() => document.querySelectorAll('#plan-map .scatterlayer .trace').length")


def map_cell(page, i: int, j: int) -> tuple[float, float]:
    """Viewport coordinates of cell (layer a = i, layer b = j) of the Collapse map."""
    page.locator("#plan-map").scroll_into_view_if_needed()
    box = page.locator("#plan-map .nsewdrag").first.bounding_box()
    n = 30
    return box["x"] + (j + 0.5) * box["width"] / n, box["y"] + (i + 0.5) * box["height"] / n


def pick_method(page, name: str) -> None:
    page.locator("#plan-method label").filter(has_text=re.compile(rf"^\s*{name}\s*$")).click()


def checked_method(page) -> str:
    return page.locator("#plan-method input:checked").get_attribute("value")


def top(page, selector: str) -> float:
    return page.locator(selector).first.bounding_box()["y"] + page.evaluate("() => window.scrollY")


def test_click_on_collapse_heatmap_draws_a_rectangle(page):
    tab(page, "3 · Collapse")
    page.wait_for_selector("#plan-map .js-plotly-plot .heatmaplayer", timeout=60_000)
    wait_text(page, "#strip .js-plotly-plot", "30 layers", 30_000)
    before = {s: top(page, s) for s in ("#plan-map", "#preview", "#strip", "#build")}
    x, y = map_cell(page, 16, 18)
    t0 = time.perf_counter()
    page.mouse.click(x, y)
    page.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 1",
        timeout=15_000,
    )
    TIMINGS["click to drawn rectangle"] = time.perf_counter() - t0
    assert page.input_value(PLAN) == "16-18"
    assert "Added 16–18" in page.inner_text("#plan-msg")
    wait_text(page, "#preview", "28", 30_000)
    wait_text(page, "#plan-chips", "KL", 30_000)  # the range's own estimate, for its hover
    # nothing moved: the message and the preview had their room already
    after = {s: top(page, s) for s in before}
    assert all(abs(after[s] - before[s]) < 2 for s in before), (before, after)
    # hovering the planned square shows its estimate
    x, y = map_cell(page, 17, 17)
    page.mouse.move(x + 3, y + 3)
    wait_text(page, "#plan-map .hoverlayer", "planned 16–18", 10_000)
    assert "KL" in page.locator("#plan-map .hoverlayer").text_content()
    print(f"click to drawn rectangle: {TIMINGS['click to drawn rectangle']:.2f} s")


def test_drag_adds_and_one_click_removes(page):
    x0, y0 = map_cell(page, 24, 24)
    x1, y1 = map_cell(page, 26, 26)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    # a rubber band shows the range the release will add, before anything is sent
    page.wait_for_selector(BAND, timeout=5_000)
    assert page.inner_text(BAND) == "24–26"
    page.screenshot(path=str(SHOTS / "rubber-band-1400.png"))
    page.mouse.up()
    assert page.locator(BAND).count() == 0
    page.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 2"
    )
    assert page.input_value(PLAN) == "16-18, 24-26"
    # one click inside a drawn square removes it
    page.mouse.click(*map_cell(page, 25, 25))
    page.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 1"
    )
    assert page.input_value(PLAN) == "16-18"
    # the chip's × removes too; the typed plan box still drives the map
    page.fill(PLAN, "10-12, 16-18")
    page.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 2"
    )
    page.click("#plan-chips button[data-range='10-12']")
    page.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 1"
    )
    assert page.input_value(PLAN) == "16-18"


@pytest.mark.parametrize(
    ("plan", "needle"), [("abc", "Cannot read range"), ("3-6, 5-8", "overlap")]
)
def test_invalid_plan_shows_its_error_inline_and_blanks_the_preview(page, plan, needle):
    page.fill(PLAN, "20-23")
    wait_text(page, "#preview", "27", 30_000)
    page.fill(PLAN, plan)
    wait_text(page, "#plan-msg", needle, 10_000)
    wait_text(page, "#preview", "No preview", 30_000)
    assert "27" not in page.inner_text("#preview")  # the previous valid preview is gone
    assert squares(page) == 0
    assert page.locator(".toast-body").count() == 0  # inline, not a stack of toasts
    wait_text(page, "#plan-share", "Fix the plan", 10_000)
    assert page.locator("#plan-share .laco-copy").count() == 0  # no link to an invalid plan


def test_a_link_reproduces_a_plan(context, app_url, page):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.fill(PLAN, "16-18, 24-26")
    pick_method(page, "drop")
    wait_text(page, "#plan-share", "method=drop", 10_000)
    link = page.locator("#plan-share a.laco-share-url").get_attribute("href")
    assert link == app_url + "?plan=16-18,24-26&method=drop"  # a full URL
    page.click("#plan-share .laco-copy")
    wait_text(page, "#plan-share", "Copied", 5_000)
    assert page.evaluate("() => navigator.clipboard.readText()") == link
    other = context.new_page()
    other.goto(link)
    wait_text(other, "#plan-msg", "Opened from a link", 90_000)
    collapse = other.get_by_role("tab", name="3 · Collapse")
    assert collapse.get_attribute("aria-selected") == "true"  # opened on the Collapse tab
    other.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 2",
        timeout=60_000,
    )
    assert other.input_value(PLAN) == "16-18, 24-26" and checked_method(other) == "drop"
    other.screenshot(path=str(SHOTS / "opened-from-link-1400.png"))
    other.close()


def test_three_way_compare_streams(page):
    tab(page, "3 · Collapse")
    for plan in ("20-23", "16-18", "24-26"):
        page.fill(PLAN, plan)
        wait_text(page, "#preview", "parameters removed", 30_000)
        page.click("#build")
        page.wait_for_function(
            "() => !document.querySelector('#build-result').innerText.includes('Built')"
        )
        wait_text(page, "#build-result", "Built", 120_000)
    tab(page, "4 · Compare")
    for _ in range(2):  # the newest is picked already; add the two others
        page.click("#cmp-model input")
        opts = page.locator("ul[role=listbox] li")
        texts = [opts.nth(i).inner_text() for i in range(opts.count())]
        opts.nth(next(i for i, t in enumerate(texts) if "✓" not in t)).click()
        time.sleep(0.3)
    page.keyboard.press("Escape")
    page.click("#cmp-run")
    panels = ["#cmp-a", "#cmp-b", "#cmp-2", "#cmp-3"]
    seen = {p: set() for p in panels}
    deadline = time.time() + 180
    while time.time() < deadline:
        for p in panels:
            seen[p].add(page.inner_text(p).strip())
        if all("done" in page.inner_text(p + "-stats") for p in panels):
            break
        time.sleep(0.1)
    assert "Paris" in page.inner_text("#cmp-a")
    for p in panels:
        assert len({s for s in seen[p] if s}) > 1, p  # each panel grew token by token
        assert "tok/s" in page.inner_text(p + "-stats")
    for p in panels[1:]:
        stats = page.inner_text(p + "-stats")
        assert "diverged at token" in stats or "identical" in stats


def test_per_token_kl_view(page):
    page.locator("#kl-run").scroll_into_view_if_needed()
    page.click("#kl-run")
    page.wait_for_selector("#kl-view .laco-tok", timeout=60_000)
    tip = page.locator("#kl-view .laco-tok").nth(5).get_attribute("title")
    assert "KL" in tip and "top 3" in tip


def test_evaluate_all_fills_table_and_pareto(page):
    tab(page, "5 · Evaluate")
    quick_words(page)
    page.click("#eval-all")
    wait_text(page, "#eval-all-bar", "Scored 3 models", 300_000)
    table = page.inner_text("#eval-table")
    assert "ppl ratio held-out" in table and "KL cal." in table
    page.wait_for_selector("#eval-pareto .scatterlayer .trace", timeout=30_000)


def test_screenshots_of_every_tab_at_1400(page):
    page.set_viewport_size({"width": 1400, "height": 1000})
    for i, name in enumerate(TABS, 1):
        tab(page, name)
        time.sleep(1.0)
        assert page.get_by_role("tab", name=name).get_attribute("aria-selected") == "true", name
        png = page.screenshot(path=str(SHOTS / f"tab{i}-1400.png"), full_page=True)
        # a full-page PNG is as wide as the page (width at bytes 16-20): nothing overflows 1400 px
        assert int.from_bytes(png[16:20], "big") == 1400, name


def heatmap_whole(page, selector: str) -> dict:
    """Where a heatmap's plot area and colour bar lie in its figure, and the axis ranges."""
    return page.evaluate(
        """(s) => {
        const gd = document.querySelector(s + ' .js-plotly-plot');
        const r = gd.getBoundingClientRect();
        const cb = gd.querySelector('.colorbar');
        const cbr = cb ? cb.getBoundingClientRect() : null;
        const fl = gd._fullLayout;
        return {width: r.width, right: r.right, cbRight: cbr ? cbr.right : null,
                cbWidth: cbr ? cbr.width : 0, x: fl.xaxis.range, y: fl.yaxis.range,
                w: fl.xaxis._length, h: fl.yaxis._length};
    }""",
        selector,
    )


def test_800px_one_column_whole_heatmaps_with_colour_bars(page):
    page.set_viewport_size({"width": 800, "height": 1000})
    time.sleep(1.0)
    tab(page, "2 · Similarity")
    time.sleep(1.0)
    for sel in ("#sim-param", "#sim-rep"):
        h = heatmap_whole(page, sel)
        assert h["cbRight"] is not None and h["cbWidth"] > 5, (sel, h)  # a colour bar
        assert h["cbRight"] <= h["right"] + 1, (sel, h)  # inside the figure
        assert h["x"] == [-0.5, 29.5] and sorted(h["y"]) == [-0.5, 29.5], (sel, h)  # whole
        assert abs(h["w"] - h["h"]) < 3, (sel, h)  # square cells
        assert h["width"] > 600, (sel, h)  # one column: the figure spans the page
    # one column: the representation map sits below the parameter map
    assert top(page, "#sim-rep") > top(page, "#sim-param") + 300
    tab(page, "3 · Collapse")
    time.sleep(1.0)
    h = heatmap_whole(page, "#plan-map")
    assert h["cbWidth"] > 5 and h["x"] == [-0.5, 29.5] and h["width"] > 600, h
    for i, name in enumerate(TABS, 1):
        tab(page, name)
        time.sleep(1.0)
        page.screenshot(path=str(SHOTS / f"tab{i}-800.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_reload_keeps_the_session(page):
    # a half-made plan (never built), its method, a prompt and the open tab: all come back
    tab(page, "3 · Collapse")
    page.fill(PLAN, "5-7")
    pick_method(page, "drop_lsq")
    wait_text(page, "#plan-share", "plan=5-7&method=drop_lsq", 10_000)
    tab(page, "4 · Compare")
    with stored_change(page):
        page.fill("#cmp-prompt textarea", "Name three rivers.")
    with stored_change(page):
        tab(page, "5 · Evaluate")
    t0 = time.perf_counter()
    page.reload()
    wait_text(page, "#work-summary", "Restored 3", 60_000)
    TIMINGS["reload to restored session"] = time.perf_counter() - t0
    wait_text(page, "#model-summary", "30 layers", 60_000)
    page.wait_for_function(
        "() => document.querySelector('[role=tab][aria-selected=true]').innerText.includes('Evaluate')"
    )
    wait_text(page, "#eval-table", "ppl ratio held-out", 30_000)
    settled(page)
    tab(page, "4 · Compare")
    assert page.input_value("#cmp-prompt textarea") == "Name three rivers."
    page.click("#cmp-model input")
    assert page.locator("ul[role=listbox] li").count() == 3
    page.keyboard.press("Escape")
    tab(page, "3 · Collapse")
    wait_text(page, "#plan-msg", "last visit", 10_000)
    assert page.input_value(PLAN) == "5-7" and checked_method(page) == "drop_lsq"
    page.wait_for_function(
        "() => document.querySelectorAll('#plan-map .scatterlayer .trace').length === 1",
        timeout=30_000,
    )
    print(f"reload to restored session: {TIMINGS['reload to restored session']:.2f} s")


def test_a_session_file_brings_its_page_back(page, tmp_path):
    # a colleague's session file: a half-made plan with its method, on the Collapse tab
    ui = {"plan": "10-12", "attn": "", "method": "drop", "map": "", "prompt": "", "tab": "collapse"}
    d = {**Session(spec="default").to_dict(), "ui": ui, "owner": None}
    path = tmp_path / "colleague.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    tab(page, "5 · Evaluate")
    page.locator("#work").get_by_text("Your work: save, load, share").click()
    page.set_input_files("#work-files input[type=file]", str(path))
    page.click("#load-recipe")
    wait_text(page, "#load-result", "and its page", 60_000)
    page.wait_for_function(
        "() => document.querySelector('[role=tab][aria-selected=true]').innerText.includes('Collapse')",
        timeout=10_000,
    )
    wait_text(page, "#plan-msg", "session file you loaded", 10_000)
    try:
        page.wait_for_function(  # the tab it opens draws the plan as it shows
            """() => document.querySelector('#plan textarea, #plan input')?.value === '10-12'
                && document.querySelector('#plan-method input:checked')?.value === 'drop'""",
            timeout=30_000,
        )
    except PlaywrightTimeout:  # say what the page shows instead
        shown = (page.input_value(PLAN), checked_method(page), page.inner_text("#plan-msg"))
        raise AssertionError(f"plan, method and message after the load: {shown}") from None
