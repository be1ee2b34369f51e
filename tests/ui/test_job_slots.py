"""One long job per session, whatever its kind: each long job kind started twice in one
session has its second start refused with the same sentence, and its first still completes
(or stops cleanly); stopping reaches the innermost loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gradio as gr
import pytest

from components import (
    auto_panel,
    baselines_panel,
    collapse_build,
    compare_tab,
    evaluate_tab,
    export_tab,
    jobs,
    lmeval_panel,
    model_tab,
)
from components.common import remember
from components.state import Session
from laco_core.analysis.evaluate import evaluate as evaluate_model
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import Cancelled, LimitExceeded
from laco_core.recipe import TextSource
from laco_core.runtime import comparison
from laco_core.runtime.engine import Engine
from laco_core.runtime.jobs import BUSY
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.heal import HealStep

PROMPTS = "The cat sat on the mat.\nA short sentence about rivers and hills.\nNumbers: 1 2 3 4."
TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 12)
REFUSED = BUSY.format(limit=1)


class NoProgress:
    def __call__(self, *args, **kwargs):
        return None


@pytest.fixture
def loaded(tmp_path):
    path = tmp_path / "llama"
    tiny_model("llama", layers=6).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    engine = Engine()
    session, _, _ = model_tab.load_model(
        engine, str(path), "float32", "cpu", Session(), progress=NoProgress()
    )
    return engine, session


def built(engine, session) -> str:
    """A build in the session, without the Build button's measurements."""
    base = engine.load(session.spec, session.dtype, session.device)
    did = engine.run(base, [CollapseStep([[1, 2]], "drop")], session.token())
    return remember(engine, session, did).id


@contextmanager
def gate(monkeypatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Every job's work waits for ``release`` once it ``started``, in its slot already."""
    started, release = threading.Event(), threading.Event()
    real = jobs.start

    def start(engine, owner, panel, work):
        def held(job):
            started.set()
            release.wait(30)
            return work(job)

        return real(engine, owner, panel, held)

    monkeypatch.setattr(jobs, "start", start)
    try:
        yield started, release
    finally:
        release.set()


def refusal(call: Callable[[], object]) -> str:
    """The sentence a refused start shows (an error, or the warning beside T)."""
    try:
        out = call()
        out = list(out) if hasattr(out, "__next__") else out
    except (gr.Error, LimitExceeded) as e:
        return getattr(e, "message", None) or str(e)
    return str(out[-1][0])  # the threshold check says it inline


def twice(monkeypatch, start: Callable[[], object]) -> list:
    """Run ``start()`` (a handler's generator) on a thread, held in its slot; start it again
    here; then let the first finish. Returns the first's updates."""
    box: dict = {}
    with gate(monkeypatch) as (started, release):

        def first() -> None:
            try:
                box["updates"] = list(start())
            except BaseException as e:  # noqa: BLE001 - inspected below
                box["error"] = e

        worker = threading.Thread(target=first)
        worker.start()
        assert started.wait(30), box
        assert REFUSED in refusal(start)
        release.set()
        worker.join(60)
    assert "error" not in box, box.get("error")
    return box["updates"]


def done(bar: str) -> bool:
    return "data-state='done'" in bar


def test_search_build_threshold_check_twice(loaded, monkeypatch):
    engine, session = loaded
    common = {"merge_count": 2, "low": 1, "threshold": 0.5, "early_exit": False}
    search = twice(
        monkeypatch,
        lambda: auto_panel.run_auto(
            engine, session, PROMPTS, "drop", "cosine", "greedy", "layers", 2, 0, common
        ),
    )
    assert done(search[-1][1])
    build = twice(
        monkeypatch,
        lambda: collapse_build.build_collapse(engine, session, "1-2", "drop", PROMPTS),
    )
    assert done(build[-1][1]) and build[-1][3]["id"]
    keys = [("common", "merge_count"), ("common", "low"), ("common", "threshold")]
    seen: dict = {}
    check = twice(
        monkeypatch,
        lambda: auto_panel.check_threshold(
            engine, session, PROMPTS, "drop", "cosine", "paper", seen, keys, 2, 1, 0.0
        ),
    )
    assert "Algorithm 1 removes" in check[-1][0]
    assert engine._jobs.running(session.token()) == 0  # every slot given back


def test_evaluate_and_evaluate_all_twice(loaded, monkeypatch):
    engine, session = loaded
    did = built(engine, session)
    one = twice(
        monkeypatch,
        lambda: evaluate_tab.evaluate(engine, session, did, "pasted text", TEXT, None, 64, 0),
    )
    assert done(one[-1][1]) and one[-1][3]["ppl"] > 0
    every = twice(
        monkeypatch,
        lambda: evaluate_tab.evaluate_all(engine, session, "pasted text", TEXT, None, 64, 0),
    )
    assert done(every[-1][1])
    assert engine._jobs.running(session.token()) == 0


def test_baselines_twice(loaded, monkeypatch):
    engine, session = loaded
    base = twice(
        monkeypatch,
        lambda: baselines_panel.run_baselines(engine, session, "30", ["shortgpt"], 0),
    )
    assert done(base[-1][1]) and len(base[-1][2]) == 2  # dense and shortgpt
    assert engine._jobs.running(session.token()) == 0


def test_lmeval_twice(loaded, monkeypatch):
    pytest.importorskip("lm_eval")
    engine, session = loaded
    lm = twice(monkeypatch, lambda: lmeval_panel.run_lmeval(engine, session, "laco_mc", 2, []))
    assert done(lm[-1][1])  # (session, bar, table)
    assert engine._jobs.running(session.token()) == 0


def test_compare_export_and_heal_twice(loaded, monkeypatch):
    engine, session = loaded
    did = built(engine, session)
    owner = session.token()
    decoding = (4, False, 1, 1, 0, 0, False, 1)
    first = compare_tab.compare(engine, session, [did], "hello", *decoding)
    next(first)  # streaming: the slot is held until the stream ends
    assert REFUSED in refusal(lambda: compare_tab.compare(engine, session, [did], "hi", *decoding))
    assert REFUSED in refusal(lambda: export_tab.export(engine, session, did, NoProgress()))
    rest = list(first)
    assert rest and "tok/s" in rest[-1][13]  # the build's stats
    # an export holds the slot: a second long job waits for it
    with engine.job(owner):
        assert REFUSED in refusal(lambda: export_tab.export(engine, session, did, NoProgress()))
    assert export_tab.export(engine, session, did, NoProgress())[2]
    # a heal inside a job nests in the job's slot; a second one of the session is refused
    heal = HealStep(steps=2, seq_len=16, batch_size=1, teacher=False, text=TextSource.of([TEXT]))
    base = engine.load(session.spec, session.dtype, session.device)
    with gate(monkeypatch) as (started, release):
        job = jobs.start(
            engine, owner, "heal", lambda j: engine.run(base, [heal], owner, did, stop=j.stop)
        )
        assert started.wait(30)
        with pytest.raises(LimitExceeded) as info:
            engine.run(base, [heal], owner, did)
        assert str(info.value) == REFUSED
        release.set()
        for _ in job.ticks():
            pass
    assert job.outcome().startswith("heal")
    assert engine._jobs.running(owner) == 0


def test_stop_reaches_the_evaluation_windows_and_the_comparison_points(loaded, monkeypatch):
    engine, session = loaded
    did = built(engine, session)
    owner = session.token()
    model, base = engine.model(did, owner)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):  # checked before every window
        evaluate_model(model, base.tokenizer, TEXT, reference=base.model, seq_len=64, stop=stop)
    stop.clear()

    def after_dense(done: int, total: int, message: str) -> None:
        stop.set()  # Stop while the dense row is scored: the next point does not start

    with pytest.raises(Cancelled):
        comparison.compare_all(
            base.model,
            base.tokenizer,
            TEXT,
            PROMPTS.splitlines(),
            [0.3],
            methods=["shortgpt"],
            eval_seq_len=64,
            callback=after_dense,
            stop=stop,
        )
    # a handler's job stopped while it runs ends Cancelled, and frees the session's slot
    with gate(monkeypatch) as (started, release):
        gen = evaluate_tab.evaluate_all(engine, session, "pasted text", TEXT, None, 64, 0)
        next(gen)
        assert started.wait(30)
        (job,) = jobs._RUNNING[(owner, "evalall")]
        job.stop.set()
        release.set()
        for _ in job.ticks():
            pass
        with pytest.raises(Cancelled):
            job.outcome()
        gen.close()
    assert engine._jobs.running(owner) == 0
