"""The urgent regression on the real default model: a streaming compare cancelled after a few
seconds used to wedge the app for everyone (a lock held across ``yield``); the next search
must complete, and so must the next compare."""

from __future__ import annotations

import time

import pytest

from tests.helpers import compare_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_app():
    from gradio_client import Client

    from tests.ui.app_server import launch_app

    demo, url, engine = launch_app()  # as app.py serves it: the default model preloaded
    yield Client(url, verbose=False), url
    demo.close()


def _compare(did: str, new: int):
    return compare_args(did, "Write a long story about a lighthouse keeper.", new)


def test_cancelled_compare_then_search_completes(default_app):
    from gradio_client import Client

    client, url = default_app
    _, built = client.predict("20-23", "official", "The sky is blue.", api_name="/collapse")
    did = built["id"]
    job = client.submit(*_compare(did, 512), api_name="/compare")
    t0 = time.time()
    while len(job.outputs()) < 3 and time.time() - t0 < 60:
        time.sleep(0.1)
    time.sleep(max(0.0, 3 - (time.time() - t0)))  # a few seconds into the stream
    assert not job.done()
    job.cancel()

    other = Client(url, verbose=False)  # the search comes from another visitor
    prompts = "\n".join(
        [
            "The sky is blue because of Rayleigh scattering.",
            "Write a haiku about autumn rain.",
            "What is the capital of France?",
            "List three uses of a paperclip.",
        ]
    )
    t1 = time.time()
    md, _, _ = other.predict(
        prompts, 4, 1, 0, 2, 0.9, "official", "cosine", "paper", 0, api_name="/auto_collapse"
    )
    assert md.startswith("### ✓ Search done"), md
    assert time.time() - t1 < 300
    a, b, *_ = client.submit(*_compare(did, 8), api_name="/compare").result()
    assert "laco-answer" in a and "laco-answer" in b
