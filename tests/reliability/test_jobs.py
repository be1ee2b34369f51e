"""Long jobs: one per session, cancellable through the stop event, and a cancelled search
through the real app leaves nothing behind: the next search completes."""

from __future__ import annotations

import threading
import time

import pytest

from laco_core.errors import Cancelled, LimitExceeded
from laco_core.loading.limits import Limits
from laco_core.recipe import TextSource
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep
from tests.reliability.common import PROMPTS, load_tiny, save_tiny

BUSY = (
    "One of your long jobs (a search, build, heal, export, evaluation, comparison, lm-eval run "
    "or threshold check) is still running: wait for it or stop it first. Long jobs at once per "
    "session: 1 (LACO_MAX_LONG_JOBS raises it on a self-hosted instance)."
)


def test_one_long_job_per_session_and_a_stop_frees_it(tmp_path, one_thread):
    engine = Engine(limits=Limits.current(False))
    base = engine.load(str(save_tiny(tmp_path / "m")), "float32", "cpu")
    search = SearchStep(
        SearchConfig(
            strategy="greedy", objective="kl", method="drop", merge_count=2, target_layers=3
        ),
        TextSource.of(PROMPTS.splitlines()),
    )
    scored, release, stop = threading.Event(), threading.Event(), threading.Event()
    box: dict = {}

    def events(_event: dict) -> None:  # hold the search at its first candidate
        scored.set()
        release.wait(30)

    def long_job() -> None:
        try:
            engine.run(base, [search], "alice", events=events, stop=stop)
        except BaseException as e:  # noqa: BLE001 - inspected below
            box["error"] = e

    worker = threading.Thread(target=long_job)
    worker.start()
    assert scored.wait(30)
    with pytest.raises(LimitExceeded) as info:
        engine.run(base, [CollapseStep([[1, 2]])], "alice")
    assert str(info.value) == BUSY
    assert engine.run(base, [CollapseStep([[1, 2]])], "bob")  # other sessions are not held up
    stop.set()  # what a closed stream does (the handler's finally)
    release.set()
    worker.join(30)
    assert isinstance(box.get("error"), Cancelled)
    assert [b.owner for b in engine.builds("alice")] == []  # nothing registered
    assert engine.run(base, [CollapseStep([[1, 2]])], "alice")  # the slot is free again


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A 24-layer tiny model: a greedy KL search on it streams for several seconds."""
    return save_tiny(tmp_path_factory.mktemp("deep") / "deep", layers=24)


def test_a_cancelled_search_frees_the_session_and_the_next_one_completes(app, deep):
    client = app.client()
    load_tiny(client, deep)
    prompts = "\n".join(f"{line} ({i})" for i in range(16) for line in PROMPTS.splitlines())
    slow = (prompts, 4, 1, 0, 2, 0.5, "drop", "kl", "greedy", 20)
    before = set(app.engine._builds)
    job = client.submit(*slow, api_name="/auto_collapse")
    deadline = time.time() + 60
    while len(job.outputs()) < 3 and time.time() < deadline:  # a few candidates scored
        time.sleep(0.05)
    assert not job.done(), "the search finished before it could be cancelled"
    job.cancel()
    deadline = time.time() + 60
    while app.engine._jobs._running and time.time() < deadline:  # stops at its next layer
        time.sleep(0.1)
    assert not app.engine._jobs._running
    assert set(app.engine._builds) == before  # the cancelled search registered nothing
    md, _, _ = client.predict(
        PROMPTS, 2, 1, 0, 2, 0.5, "official", "cosine", "paper", 0, api_name="/auto_collapse"
    )
    assert md.startswith("### ✓ Search done")
