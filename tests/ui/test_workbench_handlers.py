"""The workbench's handlers on tiny models: the plan on the map, jobs (bar, ETA, Stop), the kept
session (browser, file, link), N-model compare, per-token KL, Evaluate all, lm-eval, the
measured threshold warning, quiet logs."""

from __future__ import annotations

import json
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from components import (
    auto_panel,
    collapse_build,
    compare_tab,
    evaluate_tab,
    export_tab,
    jobs,
    lmeval_panel,
    logs,
    method_picker,
    plan_editor,
    plan_map,
    plots,
    search_job,
    session_panel,
    threshold_check,
)
from components.common import model_of
from components.settings import COMMON
from components.state import Entry, Session
from laco_core import schema
from laco_core.analysis.evaluate import reference_metrics
from laco_core.errors import Cancelled, LacoError
from laco_core.methods.calibrated import MANUAL_ALPHA
from laco_core.ops import build_collapsed
from laco_core.registry import REGISTRY
from laco_core.runtime.engine import Engine
from tests.ui.helpers import NoProgress, tiny_session

PROMPTS = "The cat sat on the mat.\nA short sentence about rivers and hills.\nNumbers: 1 2 3 4."
TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 12)


def select(index, value=0, **extra) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": value, **extra})


@pytest.fixture
def loaded(tmp_path):
    engine, session, _ = tiny_session(tmp_path / "llama")
    return engine, session


def analysis_of(n: int = 6) -> dict:
    rng = np.random.default_rng(0)
    param = rng.uniform(0, 0.01, (n, n)) + np.eye(n)
    rep = rng.uniform(0.5, 1.0, (n + 1, n + 1))
    return {"param": {"all": param}, "rep": {"cosine": rep}}


def built(engine, session, plan="1-3", method="official") -> str:
    steps = list(collapse_build.build_collapse(engine, session, plan, method, PROMPTS))
    return steps[-1][3]["id"]


# ---- the plan on the map ---------------------------------------------------------------------


def test_gestures_add_join_and_remove():
    plan, msg = plan_map.gesture([], [3, 1, 3, 1], 6)
    assert plan == [(1, 3)] and "Added 1–3" in msg
    plan, msg = plan_map.gesture(plan, [4, 4, 4, 4], 6)  # a diagonal cell: it and the next
    assert plan == [(1, 3), (4, 5)] and "Added 4–5" in msg
    plan, msg = plan_map.gesture(plan, [0, 2, 0, 2], 6)  # overlapping ranges are joined
    assert plan == [(0, 3), (4, 5)] and "Joined" in msg
    plan, msg = plan_map.gesture([(1, 3)], [2, 2, 2, 2], 6)  # a click inside a square removes it
    assert plan == [] and "Removed 1–3" in msg
    plan, msg = plan_map.gesture([(0, 1)], [3, 3, 5, 5], 6)  # a drag spans min..max
    assert plan == [(0, 1), (3, 5)]
    plan, _ = plan_map.gesture([], [5, 5, 5, 5], 6)  # the last layer pairs with the one before
    assert plan == [(4, 5)]
    plan, msg = plan_map.remove([(0, 1), (3, 5)], "3-5")
    assert plan == [(0, 1)] and "Removed 3–5" in msg


def test_plan_figure_draws_a_square_per_range_with_its_estimate():
    est = {
        (1, 3): {
            "kl": 0.25,
            "cosine": 0.9,
            "layers_before": 6,
            "layers_after": 4,
            "params_before": 100,
            "params_after": 80,
        }
    }
    fig = plan_map.plan_figure(analysis_of(), "parameters", [(1, 3), (4, 5)], est)
    squares = [d for d in fig.data if d.type == "scatter"]
    assert len(squares) == 2 and list(squares[0].x) == [0.5, 3.5, 3.5, 0.5, 0.5]
    assert "KL 0.250" in squares[0].text and "estimating" in squares[1].text
    assert fig.layout.dragmode is False and list(fig.layout.xaxis.range) == [-0.5, 5.5]
    assert "diagonal" in fig.data[0].colorbar.title.text  # the scale says it excludes it
    rep = plan_map.plan_figure(analysis_of(), "representations", [], {})
    a = analysis_of()["rep"]["cosine"]
    assert rep.data[0].z.shape == (6, 6) and rep.data[0].z[2][4] == pytest.approx(a[2][5])
    html = plan_map.chips_html([(1, 3)], est)
    assert "data-range='1-3'" in html and "KL 0.250" in html


def test_click_map_updates_plan_figure_chips_and_message(loaded):
    engine, session = loaded
    view = (session, analysis_of(), "parameters", "", "official", PROMPTS, {})
    text, fig, chips, msg, md, strip = plan_editor.click_map(
        *view, select([3, 1, 3, 1], plot="plan-map")
    )
    assert text == "1-3" and "Added" in msg and "data-range='1-3'" in chips
    assert "Estimating" in md and strip.layout.title.text == "6 layers → 4 layers"
    assert sum(d.type == "scatter" for d in fig.data) == 1
    view = (session, analysis_of(), "parameters", text, "official", PROMPTS, {})
    text, *_ = plan_editor.click_map(*view, select([2, 2, 2, 2]))
    assert text == ""
    text, *_ = plan_editor.remove_chip(
        session, analysis_of(), "parameters", "1-3, 4-5", "official", PROMPTS, {}, select(0, "1-3")
    )
    assert text == "4-5"
    # a typed plan with an error is not overwritten by a click
    out = plan_editor.click_map(
        session, analysis_of(), "parameters", "abc", "official", PROMPTS, {}, select([1, 1, 1, 1])
    )
    assert "Fix the typed plan" in out[3]


@pytest.mark.parametrize(
    ("plan", "needle"), [("abc", "Cannot read range"), ("3-6, 5-8", "overlap")]
)
def test_invalid_plan_error_inline_and_preview_blank(loaded, plan, needle):
    engine, session = loaded
    session.num_layers = 10  # the overlap check needs a model at least that deep
    fig, chips, msg, md, strip = plan_editor.draw(
        session, analysis_of(), "parameters", plan, "official", PROMPTS, {}
    )
    assert needle in msg and "laco-msg-error" in msg and "No preview" in md
    md, strip, *_ = plan_editor.preview(
        engine, session, analysis_of(), "parameters", plan, "official", PROMPTS, {}
    )
    assert "No preview" in md and "layers" not in md and strip.data == ()


def test_preview_estimates_each_range_once(loaded):
    engine, session = loaded
    _, _, store, fig, chips = plan_editor.preview(
        engine, session, analysis_of(), "parameters", "0-1, 3-4", "official", PROMPTS, {}
    )
    assert len(store) == 3 and "KL" in chips  # the plan and each of its two ranges
    assert all("KL" in d.text for d in fig.data if d.type == "scatter")


def test_preview_merges_with_the_method_parameters(loaded):
    """The preview reads the parameter controls the build reads: another α, another estimate,
    each the KL of the model collapsed with that α; a bad value is refused with the build's
    message, inline."""
    engine, session = loaded
    base = engine.load(session.spec, session.dtype, session.device)
    plan = (session, {}, "parameters", "1-3", "rdsc_calibrated", PROMPTS, {}, "")

    def controls(alpha: str) -> list:
        return [alpha if name == "alpha" else "" for name in method_picker.PARAM_NAMES]

    kls = {}
    for alpha, used in (("0.2", 0.2), ("0.9", 0.9), ("", MANUAL_ALPHA)):
        store = plan_editor.preview(engine, *plan, *controls(alpha))[2]
        (est,) = [e for e in store.values() if "seconds" in e]  # the plan's own estimate
        cut = build_collapsed(base.model, "1-3", "rdsc_calibrated", alpha=used)
        direct = reference_metrics(cut, base.model, base.tokenizer, PROMPTS.splitlines())
        assert est["kl"] == pytest.approx(direct["kl"], rel=1e-3), alpha
        kls[alpha] = est["kl"]
    assert len({round(k, 6) for k in kls.values()}) == 3  # each α its own estimate

    bad = controls("5")
    with pytest.raises(gr.Error) as info:
        build = collapse_build.build_collapse
        list(build(engine, session, "1-3", "rdsc_calibrated", PROMPTS, "", *bad))
    message = "rdsc_calibrated: alpha must be a number in [0, 1], not '5'."
    assert info.value.message == message
    _, _, msg, md, _ = plan_editor.draw(*plan, "", *bad)
    assert msg == plan_map.msg_md(message, True) and "No preview" in md
    assert plan_editor.preview(engine, *plan, *bad)[2] == {}  # nothing estimated


def test_attention_sub_blocks_in_a_manual_plan(loaded):
    engine, session = loaded
    assert plan_map.read_attention("3, 2", 6, [(0, 1)]) == ([2, 3], "")
    assert "in the merged range" in plan_map.read_attention("4", 6, [(3, 5)])[1]
    assert "Cannot read" in plan_map.read_attention("x", 6, [])[1]
    view = (session, analysis_of(), "parameters", "3-4", "drop", PROMPTS, {}, "2")
    md, strip, store, fig, chips = plan_editor.preview(engine, *view[:2], *view[2:])
    assert "attention" in chips and "KV cache keeps 4 of 6" in md
    assert any(d.name == "attention removed" for d in fig.data)
    assert "without attention" in strip.layout.title.text
    _, attn, *_ = plan_editor.remove_chip(*view[:7], select(0, "a2"), "2")
    assert attn == ""
    steps = list(collapse_build.build_collapse(engine, session, "3-4", "drop", PROMPTS, "2"))
    _, bar, result, built = steps[-1]
    assert "KV cache keeps 4 of 6" in result
    assert built["recipe"]["info"]["attention_removed"] == [2]
    # the protected first layer is refused with its reason, inline
    steps = list(collapse_build.build_collapse(engine, session, "", "drop", PROMPTS, "0"))
    assert "must stay" in steps[-1][2]


def test_sim_click_adds_to_the_plan(loaded):
    _, session = loaded
    text, hint = plan_editor.sim_click(session, "0-1", select([4, 2], 0.9, plot="sim-param"))
    assert text == "0-1, 2-4" and "Collapse" in hint


# ---- jobs --------------------------------------------------------------------------------------


def test_job_reports_progress_eta_and_log():
    def work(job):
        for i in range(4):
            job.event({"n": i, "accepted": i == 2})
            job.progress((i + 1) / 4, f"step {i}")
            time.sleep(0.3)
        return "ok"

    job = jobs.start(Engine(), "owner-a", "test", work)
    bars = [jobs.bar_html(job) for _ in job.ticks(every=0.1)]
    assert job.outcome() == "ok" and len(job.events) == 4
    assert any("ETA" in b and "elapsed" in b for b in bars)
    assert "100 %" in jobs.bar_html(job, "done", "Done.")
    html = jobs.log_html(job.events, [("n", "#", None), ("accepted", "ok", None)])
    assert html.count("laco-accepted") == 1
    assert jobs.duration(75) == "1 min 15 s" and jobs.duration(None) == "–"


def test_stop_sets_the_engine_stop_event_and_cancels():
    started = threading.Event()

    def work(job):
        started.set()
        while not job.stop.wait(0.05):
            pass
        job.progress(0.5)  # a report after a stop raises Cancelled

    job = jobs.start(Engine(), "owner-b", "test", work)
    started.wait(5)
    assert jobs.running("owner-b", "test")
    html = jobs.stop_panel("test", SimpleNamespace(token=lambda: "owner-b"))
    assert "Stopped" in html
    for _ in job.ticks(every=0.05):
        pass
    with pytest.raises(Cancelled):
        job.outcome()
    job.close()
    assert not jobs.running("owner-b", "test")


def test_closing_a_search_generator_stops_the_search(loaded):
    engine, session = loaded
    gen = auto_panel.run_auto(
        engine,
        session,
        PROMPTS * 20,
        "official",
        "cosine",
        "greedy",
        "layers",
        0,
        0,
        {"merge_count": 2, "low": 1, "threshold": 0.99, "early_exit": False},
    )
    next(gen)  # the search is running on its worker
    job = next(iter(jobs._RUNNING[(session.token(), "auto")]))
    gen.close()  # what a Stop (cancels=…) or a closed tab does
    assert job.stop.is_set()


# ---- keep the work -------------------------------------------------------------------------------


def test_session_round_trips_through_the_browser_and_a_file(loaded, tmp_path):
    engine, session = loaded
    did = built(engine, session)
    stored = session_panel.snapshot(session)
    assert json.loads(json.dumps(stored)) == stored  # JSON, no tensors
    fresh, summary = session_panel.restore(stored, Session())
    assert fresh.owner == session.owner and fresh.current == did and fresh.restored == 1
    assert "Restored 1" in summary
    # the engine forgot the build (a restart): it is registered again from its recipe
    other = Engine()
    did2, model, _ = model_of(other, fresh, did)
    assert model.config.num_hidden_layers == 4 and fresh.current == did2
    # garbage in the browser gives a fresh session, never an error
    s, _ = session_panel.restore({"format": "laco-session", "builds": [1, {"id": 3}]}, Session())
    assert s.builds == [] and s.owner is None
    # one file: download, then load into another session (the owner token stays behind)
    path = session_panel.download(session)
    assert "owner" not in json.loads(Path(path).read_text())
    other_session = Session()
    other_session.spec = session.spec
    s, md, _ = session_panel.load_files(engine, other_session, [path], progress=NoProgress())
    assert "1 model added" in md and s.builds[0].id == did
    with pytest.raises(gr.Error, match="Nothing to save"):
        session_panel.download(Session())


def test_load_a_mergekit_yaml_and_refuse_odd_files(loaded, tmp_path):
    engine, session = loaded
    yml = tmp_path / "mergekit_config.yml"
    yml.write_text(
        f"merge_method: passthrough\ndtype: float32\nslices:\n"
        f"  - sources:\n      - model: {session.spec}\n        layer_range: [0, 2]\n"
        f"  - sources:\n      - model: {session.spec}\n        layer_range: [4, 6]\n",
        encoding="utf-8",
    )
    s, md, _ = session_panel.load_files(engine, session, [str(yml)], progress=NoProgress())
    assert "Loaded" in md and s.get(s.current).info["layers_after"] == 4
    bad = tmp_path / "x.txt"
    bad.write_text("hi", encoding="utf-8")
    with pytest.raises(gr.Error, match="not a .json"):
        session_panel.load_files(engine, session, [str(bad)], progress=NoProgress())


def test_links_open_what_they_promise_and_the_page_is_kept():
    from urllib.parse import parse_qsl

    from components import links, page_memory
    from laco_core import schema
    from laco_core.recipe import BaseRef, Recipe, TextSource
    from laco_core.registry import REGISTRY
    from laco_core.search.config import SearchConfig
    from laco_core.steps.search import SearchStep

    s = Session(num_layers=30)
    values = [""] * len(method_picker.PARAM_NAMES)
    values[method_picker.PARAM_NAMES.index("alpha")] = "0.3"
    query = links.plan_query(s, "16-18, 24-26", "rdsc_calibrated", "12, 14", *values)
    assert query == "?plan=16-18,24-26&method=rdsc_calibrated&attn=12,14&p.alpha=0.3"
    assert not links.plan_query(s, "16-18, 17-20", "official", "").startswith("?")  # no link
    bad = [("7" if v else v) for v in values]  # alpha 7: outside 0…1
    assert not links.plan_query(s, "16-18", "rdsc_calibrated", "", *bad).startswith("?")
    # opening it: the Collapse tab, the plan, the method and its parameter, a line saying so
    req = SimpleNamespace(query_params=dict(parse_qsl(query[1:])))
    out = page_memory.reopen(Session(num_layers=30), req)
    session, plan, attn, method, _, _, note, tabs = out[:8]
    assert (plan, attn, method) == ("16-18, 24-26", "12, 14", "rdsc_calibrated")
    assert "Opened from a link" in note and tabs.selected == "collapse"
    assert out[8 + method_picker.PARAM_NAMES.index("alpha")]["value"] == "0.3"
    assert isinstance(page_memory.reopen(session, req)[1], type(gr.skip()))  # once per load
    # the page is kept with the session and comes back after a reload
    kept = Session(num_layers=30)
    kept, stored = page_memory.keep_page(
        kept, "5-7", "", "rdsc_calibrated", "parameters", "Hi", *values
    )
    kept, stored = page_memory.keep_tab("evaluate", kept)
    schema.check_session(stored, REGISTRY.steps)
    again, _ = session_panel.restore(stored, Session())
    out = page_memory.reopen(again, SimpleNamespace(query_params={}))
    assert out[1:6] == ("5-7", "", "rdsc_calibrated", "parameters", "Hi")
    assert "last visit" in out[6] and out[7].selected == "evaluate"
    # a searched result: its recipe steps (no weights) in a link that draws its plan
    step = SearchStep(
        SearchConfig(method="drop", strategy="greedy"),
        TextSource.of(["a text"]),
        plan=[[20, 23]],
    )
    d = Recipe(BaseRef("default", num_layers=30), [step], info={"plan": [[20, 23]]}).to_dict()[0]
    found = Session(num_layers=30)
    found.add(Entry("best-1", "best", d))
    query = links.result_query(found)
    assert query.startswith("?recipe=") and len(query) < 600
    link = links.read(dict(parse_qsl(query[1:])), 30)
    assert (link["plan"], link["method"]) == ("20-23", "drop")
    assert "search greedy" in link["note"]
    found.add(Entry("plan-1", "x", {"steps": [{"kind": "collapse"}]}))
    assert links.result_query(found) == ""  # only a searched result gets a result link


# ---- every model at once --------------------------------------------------------------------------


def test_compare_three_builds_and_token_view(loaded):
    engine, session = loaded
    ids = [built(engine, session, p) for p in ("1-3", "2-4", "0-1")]
    steps = list(
        compare_tab.compare(engine, session, ids, "hello there", 5, False, 1, 1, 0, 0, False, 1)
    )
    first, last = steps[0], steps[-1]
    assert [c.visible for c in first[:4]] == [True, True, True, True]
    assert first[4] == "#### Original" and ids[0] in first[5]
    stats = last[12:16]
    assert all("tok/s" in s for s in stats) and all(
        "diverged" in s or "identical" in s for s in stats[1:]
    )
    with pytest.raises(gr.Error, match="at most 3"):
        list(
            compare_tab.compare(engine, session, ids + ["x"], "hi", 2, False, 1, 1, 0, 0, False, 1)
        )
    html = compare_tab.token_view(engine, session, ids[0], TEXT[:200])
    assert html.count("class='laco-tok'") > 20 and "top 3" in html and "mean" in html


def test_evaluate_all_fills_one_table_and_a_pareto_plot(loaded):
    engine, session = loaded
    a, b = built(engine, session, "1-3"), built(engine, session, "0-1")
    session.get(a).metrics["ho_ppl"] = 99.0  # stale: cleared when Evaluate all starts
    steps = list(evaluate_tab.evaluate_all(engine, session, "pasted text", TEXT, None, 64, 0))
    session, bar, table, fig, note = steps[-1]
    assert "Scored 2 models" in bar
    assert list(table["id"]) == ["original", a, b]
    col = "ppl ratio held-out (×)"
    assert table[col].notna().all() and (table[col] == table[col].round(2)).all()
    assert {d.name for d in fig.data} >= {"frontier", "your models", "original"}
    assert "Held-out text: pasted text" in note


def test_pareto_frontier():
    assert plots.frontier([0, 10, 20, 20, 30], [1, 1.5, 3, 2, 5]) == [0, 1, 3, 4]


def test_lmeval_panel_runs_offline_task_and_names_missing_ones(loaded):
    pytest.importorskip("lm_eval")
    engine, session = loaded
    did = built(engine, session)
    steps = list(lmeval_panel.run_lmeval(engine, session, "laco_mc", 3, [did]))
    session, bar, md = steps[-1]
    assert "Done" in bar and "% of dense" in md and did in md and "original" in md
    assert " ± " in md and "Within noise" in md
    steps = list(lmeval_panel.run_lmeval(engine, session, "no_such_task_xyz", 2, []))
    assert "laco-msg-error" in steps[-1][2]
    assert did in steps[-1][2]  # the scores kept stay on screen under the error


def test_findings_travel_with_the_model(loaded):
    """Build, Evaluate, lm-eval and export: the card, the recipe and the session file carry
    every measurement with what it was measured on; a reloaded recipe keeps them."""
    pytest.importorskip("lm_eval")
    engine, session = loaded
    did = built(engine, session)
    assert lmeval_panel.picked(session) == [did]  # the picker starts with the session's models
    list(evaluate_tab.evaluate(engine, session, did, "pasted text", TEXT, None, 64, 0))
    session, bar, md = list(lmeval_panel.run_lmeval(engine, session, "laco_mc", 4, [did]))[-1]
    assert "Done" in bar
    entry = session.get(did)
    row = entry.lmeval["model"]["laco_mc"]
    assert row["samples"] == 4 and entry.lmeval["dense"]["laco_mc"]["samples"] == 4
    cell = f"{100 * row['acc']:.1f} ± {100 * row['acc_stderr']:.1f}"
    assert cell in md  # the table shows each score with its standard error

    # the session file (and the browser's copy) keeps the lm-eval scores
    stored = json.loads(json.dumps(session.to_dict()))
    again = Session.from_dict(stored)
    assert again.get(did).lmeval == entry.lmeval and again.dense_lmeval == session.dense_lmeval
    assert lmeval_panel.table_md(again) == md
    schema.check_session(stored, REGISTRY.steps)
    bad = json.loads(json.dumps(stored))
    bad["builds"][0]["lmeval"]["model"]["laco_mc"]["acc"] = [1]
    with pytest.raises(
        LacoError, match="Session build 1: 'lmeval.model': metric 'acc' of laco_mc must be a number"
    ):
        schema.check_session(bad, REGISTRY.steps)
    assert Session.from_dict(bad).get(did).lmeval == {}  # the browser's copy: dropped, no error
    bad = {**stored, "dense_lmeval": ["x"]}
    with pytest.raises(LacoError, match="'dense_lmeval' must be a mapping"):
        schema.check_session(bad, REGISTRY.steps)

    # export: README and laco_recipe.json carry the findings with their sources
    session, vmd, _, recipe_path = export_tab.export(engine, session, did, progress=NoProgress())
    said = vmd.replace("\\", "")  # Markdown-escaped: the texts may come from a file
    assert "held-out perplexity (pasted text, all of it, 64-token windows)" in said
    assert "lm-eval (laco_mc (4 questions))" in said
    readme = (Path(recipe_path).parent / "README.md").read_text()
    m = entry.metrics
    assert "Not measured" not in readme
    assert "measured on pasted text, all of it, 64-token windows" in readme
    assert f"| perplexity | {m['ho_ppl']:,.2f} |" in readme
    assert f"| perplexity ÷ base model's | {m['ho_ratio']:.3f}× |" in readme
    assert "On 3 calibration prompts, when it was built" in readme
    assert "lm-evaluation-harness on laco_mc (4 questions)" in readme
    assert f"| this model | {cell} |" in readme and "Within noise" in readme
    recipe = json.loads(Path(recipe_path).read_text())
    found = recipe["info"]["findings"]
    assert found["heldout"]["ratio"] == m["ho_ratio"] and found["heldout"]["text"] == m["ho_src"]
    assert found["lmeval"] == entry.lmeval and found["calibration"]["text"] == m["cal_src"]
    assert "steps.merges" in recipe["numbering"] and "info.plan" in recipe["numbering"]

    # the recipe loaded back keeps its findings, and an export of it states them again
    session, _, _ = session_panel.load_files(engine, session, [recipe_path], progress=NoProgress())
    assert engine.recipe(session.current, session.token()).info["findings"] == found
    again, _ = engine.download(session.current, session.token())
    assert json.loads((again.path / "laco_recipe.json").read_text())["info"]["findings"] == found
    assert "laco_mc (4 questions)" in (again.path / "README.md").read_text()


# ---- the threshold check (Best collapse: test_best_collapse.py) ------------------------------


def test_threshold_check_measures_the_plan_and_its_damage(loaded):
    engine, session = loaded
    keys = [("common", "merge_count"), ("common", "low"), ("common", "threshold")]
    keys += [("strategy", "interval"), ("strategy", "lazy"), ("method", "alpha")]
    raw = [2, 1, 0.0, 1, True, ""]  # greedy's lazy and a method's alpha: not paper's, ignored
    first, (md, seen) = list(
        auto_panel.check_threshold(
            engine, session, PROMPTS, "official", "cosine", "paper", {}, keys, *raw
        )
    )
    assert "Measuring" in first[0]
    assert "Algorithm 1 removes" in md and "KL" in md and len(seen) == 1
    ((again, seen2),) = list(
        auto_panel.check_threshold(
            engine, session, PROMPTS, "official", "cosine", "paper", seen, keys, *raw
        )
    )
    assert again == md and seen2 is seen  # remembered, not searched again
    assert "Destructive" in threshold_check.threshold_md(0.65, [(1, 4)], 3, 2.5)
    assert "✓" in threshold_check.threshold_md(0.95, [(1, 2)], 1, 0.05)


def test_strategy_controls_follow_declared_uses():
    def shown(strategy, target=0, percent=0, method="official"):
        *settings, units, methods = auto_panel.visibility(strategy, target, percent, method)
        names = [d.name for d in COMMON] + auto_panel._strategy_names()
        vis = {n: u["visible"] for n, u in zip(names, settings, strict=True)}
        return vis, units["visible"], methods

    paper, units, methods = shown("paper")
    assert paper["interval"] and paper["early_exit"] and not paper["lazy"] and not units
    assert not paper["generations"] and "official" in methods["choices"]
    greedy, units, _ = shown("greedy", 4)
    assert not greedy["interval"] and greedy["lazy"] and not greedy["threshold"] and units
    evo, _, methods = shown("evo", 0, 20)
    assert evo["generations"] and evo["population"] and not evo["threshold"]
    # evo searches plain drops only: the methods it cannot use are not offered
    assert "drop" in methods["choices"] and "rdsc" not in methods["choices"]
    assert methods["value"] in methods["choices"]


def test_search_log_names_every_kind_of_candidate():
    rows = search_job.numbered(
        [
            {"lo": 3, "hi": 5, "orig": [3, 5], "score": 0.9, "accepted": True},
            {"lo": 7, "hi": 7, "orig": [7, 7], "unit": "attention", "score": 0.8},
            {"generation": 2, "removed": [4, 9], "score": 0.7, "accepted": False},
        ]
    )
    assert [r["what"] for r in rows] == [
        "layers 3–5",
        "attention of layer 7",
        "generation 2: remove 4, 9",
    ]
    assert search_job.search_fraction(rows, 4, 30, 1) == pytest.approx(0.05 + 0.9 * 0.5)
    assert search_job.search_fraction(rows, 4, 30, 1, generations=4) == pytest.approx(0.725)


def test_every_listener_gets_the_inputs_its_handler_takes():
    """Gradio only warns when a listener's inputs do not match its function: make it fail."""
    import app

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        app.build_app(Engine())
    wrong = [str(w.message) for w in seen if "argument" in str(w.message)]
    assert not wrong, wrong


# ---- quiet logs ---------------------------------------------------------------------------------


def test_library_warnings_are_filtered_once_ours_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        logs.quiet()
        warnings.warn_explicit("old", FutureWarning, "x.py", 1, module="transformers.models.x")
        warnings.warn_explicit("ours", FutureWarning, "y.py", 1, module="laco_core.search")
    assert [str(w.message) for w in seen] == ["ours"]


def test_user_errors_do_not_print_a_traceback():
    from components.common import handler
    from laco_core.errors import LacoError

    @handler
    def boom():
        raise LacoError("bad range")

    with pytest.raises(gr.Error) as e:
        boom()
    assert e.value.print_exception is False and "bad range" in str(e.value.message)


def test_entry_params_removed():
    e = Entry("x", "x", {"info": {"params_before": 200, "params_after": 150}})
    assert e.params_removed == 25.0


# ---- the logit lens ------------------------------------------------------------------------------


def test_logit_lens_panel_sets_a_build_beside_the_original(loaded):
    from components import lens_panel
    from laco_core.analysis.lens import logit_lens

    engine, session = loaded
    did = built(engine, session, "1-3", "drop")
    md, fig = lens_panel.run_lens(engine, session, did, "the cat sat on the mat")
    data = fig.data
    assert [t.type for t in data] == ["heatmap", "heatmap", "bar"]
    rows = [row for row in data[1].z if not np.isnan(row).all()]  # merged-away rows are empty
    assert len(rows) == 4  # 6 layers, 1-3 merged into one
    base = engine.load(session.spec, session.dtype, session.device)
    _, model, _ = lens_panel.model_of(engine, session, did)
    view = logit_lens(base.model, base.tokenizer, "the cat sat on the mat", model)
    assert list(data[2].x) == pytest.approx([k or 0 for k in view.kl])
    assert view.kl[0] == pytest.approx(0, abs=1e-6) and view.kl[1] is None and view.kl[3] > 0
    assert f"final-layer KL {view.kl[-1]:.3f}" in md
    assert "<" not in md  # tokens such as </s> are escaped before they reach the Markdown
    with pytest.raises(gr.Error, match="at least one word"):
        lens_panel.run_lens(engine, session, did, "  ")


def test_a_range_keeps_its_colour_when_others_come_and_go():
    def outline(plan, r):
        fig = plan_map.plan_figure(analysis_of(), "parameters", plan)
        (trace,) = [t for t in fig.data if t.text and t.text.startswith(f"planned {r[0]}–{r[1]}")]
        return trace.line.color

    alone = outline([(3, 4)], (3, 4))
    assert outline([(0, 1), (3, 4)], (3, 4)) == alone  # a range added before it
    assert outline([(0, 2), (3, 4)], (0, 2)) != alone  # neighbours differ
    assert (
        alone in plots.MERGE_COLOURS and "#ffc914" not in plots.MERGE_COLOURS
    )  # no viridis yellow
