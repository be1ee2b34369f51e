""" "★ Best collapse" on a tiny model: to a size in layers, within a quality budget, the old
scripted form (a percent of all parameters), bad targets answered inline, the live
size–quality curve redrawn from the search's "curve" events, the cliff banner."""

from __future__ import annotations

import json
import math
import threading
import time

import gradio as gr
import pytest

from components import best_panel, curve_plot, jobs
from laco_core.arch.tiny import tiny_model
from laco_core.errors import LacoError
from laco_core.presets import best_collapse
from laco_core.search.config import target_layers_of
from tests.ui.helpers import tiny_session

PROMPTS = "The cat sat on the mat.\nA short sentence about rivers and hills.\nNumbers: 1 2 3 4."
SIZE, BUDGET = best_panel.SIZE, best_panel.BUDGET


@pytest.fixture
def loaded(tmp_path):
    engine, session, _ = tiny_session(tmp_path / "llama")
    return engine, session


def curve_of(*ratios, refit=None, budget=None) -> dict:
    points = [
        {
            "layers_removed": i + 1,
            "plan": [[4 - i, 5]],
            "params": 0,
            "block_params": 0,
            "ppl_ratio": r,
            "kl": 0.1,
            "ppl_ratio_refit": refit if i == len(ratios) - 1 else None,
            "kl_refit": None,
        }
        for i, r in enumerate(ratios)
    ]
    return {
        "text": "valid_paragraphs",
        "dense_ppl": 20.0,
        "points": points,
        "max_ppl_ratio": budget,
        "max_kl": None,
        "knee": 2 if len(ratios) > 2 else None,
    }


def plots_of(updates) -> list:
    """The curve figures a run drew (its sixth output), in order."""
    return [fig(u[5]) for u in updates if len(u) > 5 and getattr(u[5], "value", None)]


def fig(plot) -> dict:
    """A ``gr.Plot`` update's figure, as the page receives it."""
    return json.loads(plot.value["plot"])


def searched(fig: dict) -> list:
    return next(t for t in fig["data"] if t["name"] == "searched plan")["y"]


def test_the_default_target_is_a_share_of_the_layers_and_keeps_an_embedding_heavy_model():
    kwargs = best_panel.target_of(
        SIZE, best_panel.DEFAULT_UNIT, best_panel.DEFAULT_VALUE, best_panel.DEFAULT_BUDGET
    )
    assert kwargs == {"target_block_ratio": pytest.approx(0.2)}
    heavy = tiny_model("llama", layers=10, vocab_size=2000)  # embedding + head: 58 %
    block = target_layers_of(heavy, best_collapse(**kwargs)[0].config)
    every = target_layers_of(heavy, best_collapse(target_ratio=0.2)[0].config)
    assert block == 2 and every > 2 * block  # 20 % of all parameters is many more layers
    assert best_panel.target_of(SIZE, "layers", 3, 0) == {"target_layers": 3}
    assert best_panel.target_of(BUDGET, "layers", 3, 1.5) == {"max_ppl_ratio": 1.5}
    assert best_panel.label_of(SIZE, "layers", 1, 0) == "Best collapse: remove 1 layer"


@pytest.mark.parametrize(
    ("mode", "unit", "value", "budget", "needle"),
    [
        (SIZE, "layers", 0, 0, "--target-layers must be between 1 and 5"),
        (SIZE, "layers", 6, 0, "--target-layers must be between 1 and 5"),
        (SIZE, "% of layer parameters", -5, 0, "--target-block-ratio"),
        (SIZE, "% of all parameters", math.nan, 0, "--target-ratio"),
        (SIZE, "% of all parameters", 90, 0, "needs"),
        (SIZE, "layers", 2.5, 0, "whole number"),
        (BUDGET, "layers", 0, 1.0, "--max-ppl-ratio"),
        (BUDGET, "layers", 0, None, "--max-ppl-ratio"),
    ],
)
def test_a_bad_target_is_answered_inline_and_nothing_is_built(
    loaded, mode, unit, value, budget, needle
):
    engine, session = loaded
    ((session, bar, log, md, strip, curve),) = list(
        best_panel.run_best(engine, session, mode, unit, value, budget, PROMPTS)
    )
    assert md.startswith("⚠ ") and needle in md and "\n" not in md  # one line
    assert "data-state='idle'" in bar and session.builds == []


def test_curve_events_redraw_the_plot_while_the_search_runs(loaded, monkeypatch):
    engine, session = loaded
    curves = [curve_of(1.1), curve_of(1.1, 1.3), curve_of(1.1, 1.3, 2.9)]
    seen = threading.Event()  # the page drew the last curve: the search may go on

    def fake_run(base, steps, owner, events=None, progress=None, stop=None, **_):
        for c in curves:
            seen.clear()
            events({"curve": c, "pending": True})
            assert seen.wait(30)
        raise LacoError("Even the least damaging removal of one layer breaks the budget.")

    monkeypatch.setattr(engine, "run", fake_run)
    updates = best_panel.run_best(engine, session, SIZE, "layers", 3, 0, PROMPTS)
    first = plots_of([next(updates)])
    assert searched(first[0]) == [1.0]  # the empty curve with its target, at once
    drawn = []
    for u in updates:
        drawn += plots_of([u])
        if len(u) > 5 and getattr(u[5], "value", None):
            seen.set()
    last = u  # the generator's last update
    # one redraw per event, each with the points so far
    assert [len(searched(d)) for d in drawn] == [2, 3, 4]
    assert searched(drawn[-1]) == pytest.approx([1.0, 1.1, 1.3, 2.9])
    assert "⚠ Even the least damaging" in last[3]  # the inline error; the curve stays
    shapes = {s["line"]["dash"]: s for s in drawn[-1]["layout"]["shapes"]}
    assert shapes["dash"]["x0"] == 3 and shapes["dot"]["x0"] == 2  # the target, the knee


def test_the_curve_figure_marks_refit_budget_built_and_the_cliff():
    fig = curve_plot.size_quality(
        curve_of(1.2, 1.6, 3.5, refit=2.4, budget=1.5), built=[[2, 5]], cliff=3.0
    )
    names = [t.name for t in fig.data]
    assert names == ["searched plan", "after refit", "built"]
    assert list(fig.data[1].y) == [2.4] and list(fig.data[2].y) == [2.4]
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "layers removed"
    lines = [(s.y0, s.line.dash) for s in fig.layout.shapes if s.y0 == s.y1]
    assert (1.5, "dash") in lines and any(y == 3.0 for y, _ in lines)  # budget, cliff


def test_best_collapse_by_layers_draws_the_curve_and_sizes_three_ways(loaded):
    engine, session = loaded
    t0 = time.perf_counter()
    runs = best_panel.run_best(engine, session, SIZE, "layers", 1, 0, PROMPTS)
    updates = [next(runs)]
    assert updates[0][3] == gr.skip()  # a result shown before stays until this one is made
    (job,) = jobs._RUNNING[(session.token(), "best")]
    counted = None  # seconds until the first unit of work was counted
    for u in runs:
        if counted is None and job.counter is not None and job.counter.done:
            counted = time.perf_counter() - t0
        updates.append(u)
    session, bar, log, md, strip, curve = updates[-1]
    print(f"best collapse by 1 layer on the tiny model: {time.perf_counter() - t0:.1f} s")
    # honest progress: units counted at once, each candidate in the log as it is scored
    # (rows before any is accepted), the ETA from the rate of the step's candidates
    assert counted is not None and counted < 10
    live = [u[2] for u in updates[1:-1] if "<tbody><tr>" in u[2] and "laco-accepted" not in u[2]]
    assert live, "no candidate shown before its step ended"
    step = [h for h in job.history if h[0] == "Step 1"]
    assert [h[1] for h in step] == list(range(len(step))) and step[-1][1] == step[-1][2]
    assert all(eta is not None for *_, eta in step[1:])
    assert any(h[0].startswith("Recording activations") for h in job.history)
    assert "Done" in bar and "<th>exp(−KL)</th>" in log and "remove 1 layer" in md
    assert "6 → 5 layers" in md and "of the layer parameters" in md and "of all parameters" in md
    assert "embedding and head" in md and "Validation perplexity" in md
    entry = session.get(session.current)
    assert entry.recipe["steps"][0]["config"]["target_layers"] == 1
    assert entry.recipe["steps"][0]["config"]["refit"] == "drop_lsq"
    drawn = fig(curve)
    assert len(searched(drawn)) == 2 and any(t["name"] == "built" for t in drawn["data"])


def test_best_collapse_within_a_budget(loaded):
    engine, session = loaded
    updates = list(best_panel.run_best(engine, session, BUDGET, "layers", 0, 100, PROMPTS))
    session, bar, log, md, strip, curve = updates[-1]
    assert "within 100× perplexity" in md and "Done" in bar
    cfg = session.get(session.current).recipe["steps"][0]["config"]
    assert cfg["max_ppl_ratio"] == 100 and cfg["target_block_ratio"] is None
    budget = [s for s in fig(curve)["layout"]["shapes"] if s["y0"] == s["y1"] == 100]
    assert budget and len(searched(fig(curve))) >= 3  # walked several steps within it


def test_the_scripted_endpoint_keeps_its_old_form(loaded):
    engine, session = loaded
    updates = list(best_panel.api_best(engine, session, 20, PROMPTS))
    session, bar, log, md, strip = updates[-1]  # the same five outputs as before
    cfg = session.get(session.current).recipe["steps"][0]["config"]
    assert cfg["target_ratio"] == pytest.approx(0.2) and "remove 20 % of all parameters" in md
    with pytest.raises(Exception, match="--target-layers"):
        list(best_panel.api_best(engine, session, 20, PROMPTS, "layers", 0))


def test_a_model_past_the_cliff_gets_the_banner(monkeypatch):
    from types import SimpleNamespace

    entry = SimpleNamespace(
        recipe={"steps": [{"curve": curve_of(1.5, 3.8)}]}, metrics={"cal_kl": 1.0}
    )
    size = {
        "layers": 4,
        "layers_removed": 1 / 3,
        "block_params_removed": 1 / 3,
        "params_removed": 0.26,
        "embedding_share": 0.3,
    }
    monkeypatch.setattr(best_panel, "size_report", lambda model, dense: size)
    base = SimpleNamespace(num_layers=6, model=None)
    md = best_panel.best_done("b1", entry, [(3, 5)], 5.0, "Best collapse", None, base)
    assert md.startswith("<div class='laco-msg-error'>⚠ WARNING:") and "3.80x" in md
    assert "33.3 %** of the layer parameters" in md and "26.0 %** of all parameters" in md
    calm = best_panel.best_done("b1", entry, [(4, 5)], 5.0, "Best collapse", None, base)
    assert "WARNING" not in calm and "1.50×" in calm


def test_stop_is_disabled_while_idle_and_reads_stopping_until_its_job_ends(loaded):
    engine, session = loaded
    assert not jobs.stop_state(jobs.bar_html()).interactive  # nothing runs
    ((bar, button),) = list(jobs.stop_clicked("best", "■ Stop", session))
    assert "data-state='idle'" in bar and not button.interactive
    release = threading.Event()
    job = jobs.start(engine, session.token(), "best", lambda job: release.wait(30))
    assert jobs.stop_state(jobs.bar_html(job)).interactive
    clicked = jobs.stop_clicked("best", "■ Stop", session)
    bar, button = next(clicked)
    assert button.value == "stopping…" and not button.interactive and "Stopping" in bar
    assert not jobs.stop_state(bar).interactive and job.stop.is_set()
    release.set()  # the work notices its stop
    bar, button = next(clicked)
    assert button.value == "■ Stop" and not button.interactive and "Stopped" in bar
    assert job.done
    job.close()


def test_best_collapse_then_heal_counts_the_heal_and_records_it(loaded, tmp_path, monkeypatch):
    monkeypatch.setenv("LACO_CACHE", str(tmp_path / "cache"))  # its samples, not the user's
    engine, session = loaded
    assert best_panel.label_of(SIZE, "layers", 1, 0, 5) == (
        "Best collapse: remove 1 layer, then heal 5 min"
    )
    runs = best_panel.run_best(engine, session, SIZE, "layers", 1, 0, PROMPTS, 0.1)
    updates = [next(runs)]
    (job,) = jobs._RUNNING[(session.token(), "best")]
    updates += list(runs)
    session, bar, log, md, strip, curve = updates[-1]
    entry = session.get(session.current)
    assert [s["kind"] for s in entry.recipe["steps"]] == ["search", "heal"]
    heal = entry.recipe["steps"][1]
    assert heal["teacher"] and heal["steps"] >= 1 and heal["validation_curve"]
    assert "then heal 0.1 min" in md and "Healed: " in md and "validation slice" in md
    # the heal is counted against its budget of 6 s on the bar: the ETA is the budget left
    healing = [h for h in job.history if h[0] == "Heal"]
    assert healing and all(total == 6 for _, _, total, _ in healing)
    # a bad number of minutes is answered inline, nothing built
    builds = len(session.builds)
    ((session, bar, log, md, strip, curve),) = list(
        best_panel.run_best(engine, session, SIZE, "layers", 1, 0, PROMPTS, -1)
    )
    assert (
        md == "⚠ Heal for 0 to 60 minutes (0: no heal), not -1." and len(session.builds) == builds
    )


def test_the_heal_line_says_which_adapter_was_kept():
    from components.heal_progress import heal_md

    assert heal_md({"steps": [{"kind": "search"}]}) == ""
    healed = {"steps": 40, "rank": 16, "self_text": 32, "validation_curve": [[0, 50], [30, 41.5]]}
    line = heal_md({"steps": [{"kind": "search"}, healed]})
    assert line.startswith("Healed: 40 LoRA steps (r=16) on the training text and 32 of")
    assert "the adapter of step 30 kept: validation perplexity 50.00 → **41.50**" in line
    kept = heal_md({"steps": [{**healed, "steps": 1, "validation_curve": [[0, 50], [1, 52]]}]})
    assert "1 LoRA step (" in kept and "no step scored below the unhealed 50.00" in kept
