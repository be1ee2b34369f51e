"""Make the repository root importable; one app server for every browser test module."""

import shutil
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def app_url():
    """The app as ``python app.py`` serves it, once for the whole browser tier."""
    from tests.ui.app_server import launch_app

    demo, url, _ = launch_app()
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page(app_url, chromium):
    """One page on the app per test module, its own session, the default model loaded."""
    from tests.browser.pages import SHOTS, VIEWPORT, open_app

    SHOTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=VIEWPORT)
    yield open_app(context, app_url)
    context.close()


@pytest.fixture(scope="session")
def chromium():
    """A headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    playwright = pytest.importorskip("playwright.sync_api")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (make browser)")
    with playwright.sync_playwright() as pw:
        from tests.ui.app_server import CHROMIUM_ARGS

        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
