"""The app: start to interactive with the default model (cold and warm cache), heatmaps after load.

Targets on the 2-core dev machine: cold start ≤ 30 s, heatmaps ≤ 2 s after the model is loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from . import common


def start_app(cache_dir: str, timeout: float = 240.0):
    """``python app.py`` in a subprocess; returns (process, url, seconds to interactive, client).

    Interactive = the page is served and the ``load_model`` endpoint answered for the default
    model (app.py preloads it before serving, so this is the first visitor's experience).
    """
    log = open(Path(cache_dir) / "app.log", "w")  # noqa: SIM115 - closed with the process
    t0 = time.perf_counter()
    proc, url, client, _ = common.serve_app({"LACO_CACHE": cache_dir}, log, timeout)
    _, info = client.predict("default", "auto", "auto", api_name="/load_model")
    assert info["layers"] == 30
    return proc, url, time.perf_counter() - t0, client


def browser_heatmaps(url: str) -> float | None:
    """Seconds from the default model shown as loaded to both heatmaps drawn, in Chromium."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    from tests.ui.app_server import CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_function(
            "() => { const e = document.querySelector('#model-summary');"
            " return !!e && e.innerText.includes('30 layers'); }",
            timeout=120_000,
        )
        t0 = time.perf_counter()
        page.get_by_role("tab", name="2 · Similarity").click()
        page.wait_for_selector("#sim-param .heatmaplayer", timeout=120_000)
        page.wait_for_selector("#sim-rep .heatmaplayer", timeout=120_000)
        seconds = time.perf_counter() - t0
        browser.close()
    return seconds


def main() -> None:
    from components.similarity_tab import DEFAULT_PROMPTS
    from laco_core.assets import read_prompts

    prompts = "\n".join(read_prompts()[:DEFAULT_PROMPTS])  # what the page analyses on load
    common.section("app start to interactive (python app.py, default model)")
    cold_dir = tempfile.mkdtemp(prefix="laco-bench-cold-")
    try:
        proc, _, cold, _ = start_app(cold_dir)
        common.stop(proc)
        common.at_most("cold start (empty LACO_CACHE) s", cold, 30.0)
        proc, url, warm, client = start_app(cold_dir)  # the same cache, now filled
        common.at_most("warm start s", warm, 30.0)
        common.report("cold / warm", cold / warm, note="GGUF dequantization paid once")

        common.section("heatmaps after the model is loaded")
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            client.predict(prompts, "all", "cosine", api_name="/analyze")
            best = min(best, time.perf_counter() - t0)
        common.at_most("analyze endpoint (both heatmaps + adjacent chart + CSVs) s", best, 2.0)
        seen = browser_heatmaps(url)
        if seen is None:
            common.skipped("heatmaps drawn in Chromium after load s", "no chromium/playwright")
        else:
            common.at_most(
                "heatmaps drawn in Chromium after load s",
                seen,
                2.0,
                note="includes the page's automatic analysis after load",
            )
        common.stop(proc)
    finally:
        shutil.rmtree(cold_dir, ignore_errors=True)

    common.section("the same analysis computed fresh (no memo), in this process")
    from laco_core.runtime.engine import Engine

    engine = Engine()
    plist = prompts.splitlines()
    base = engine.load("default")
    from laco_core.analysis.similarity import param_similarity, representation_similarity

    def analysis() -> None:  # what the engine memoises, computed fresh each time
        param_similarity(base.model)
        representation_similarity(base.model, base.tokenizer, plist)

    fresh = common.timeit(analysis, repeat=2, warmup=1)
    common.report(
        "fresh analysis (param + representation similarity) s",
        fresh,
        note="paid once at start-up for the default model",
    )
    common.report(
        "load average (1 min) during the run",
        os.getloadavg()[0],
        note="2 cores shared with other work",
    )


if __name__ == "__main__":
    main()
