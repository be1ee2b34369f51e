"""What the browser tests share: where screenshots go, the window size, waiting for text."""

from __future__ import annotations

from pathlib import Path

SHOTS = Path(__file__).resolve().parents[2] / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}


def wait_text(page, selector: str, needle: str, timeout: int = 60_000) -> None:
    """Wait until the element exists and its text contains ``needle`` (SVG text too)."""
    page.wait_for_function(
        "([s, n]) => { const e = document.querySelector(s); return !!e && (e.innerText ?? e.textContent).includes(n); }",
        arg=[selector, needle],
        timeout=timeout,
    )


def open_app(context, url: str):
    """A new page in ``context`` on the app, once the default model shows as loaded and the
    load has put the page back (a tab clicked before that could be switched back)."""
    page = context.new_page()
    page.goto(url)
    wait_text(page, "#model-summary", "30 layers", 90_000)
    settled(page)
    return page


def settled(page, timeout: int = 60_000) -> None:
    """Wait until the page's load has put the kept page back (``data-laco-page``)."""
    page.wait_for_function("() => document.body.dataset.lacoPage === 'ready'", timeout=timeout)


def quick_words(page, words: int = 600) -> None:
    """Evaluate scores the first ``words`` words (the app's default, 0, scores the whole held-out
    text: minutes per model on a CPU; these tests check the page, not the figures)."""
    box = "#eval-words input[type='number']"
    page.fill(box, str(words))
    page.press(box, "Enter")
