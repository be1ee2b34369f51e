"""Tab handlers called directly (no server) on tiny random models saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import pytest

from components import (
    auto_panel,
    baselines_panel,
    collapse_build,
    compare_tab,
    evaluate_tab,
    export_tab,
    model_tab,
    plan_editor,
    plots,
    session_panel,
    similarity_tab,
)
from components.state import Entry, Session
from components.widgets import RangeSlider
from laco_core.runtime.engine import Engine
from tests.ui.helpers import NoProgress, tiny_session

PROMPTS = "The cat sat on the mat.\nA short sentence about rivers and hills.\nNumbers: 1 2 3 4."
TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 12)
ARCHS = ["llama", "qwen2", "gemma2"]


@pytest.fixture(params=ARCHS)
def loaded(request, tmp_path):
    """An engine, a session whose base is a 6-layer tiny model of ``arch`` saved to disk."""
    return tiny_session(tmp_path / request.param, request.param)


def test_load_model_describes_and_sets_session(loaded):
    _, session, info = loaded
    assert session.num_layers == 6 == info["layers"]
    assert session.dtype == "float32" and info["params"] > 0


def test_load_model_bad_spec_is_user_error():
    with pytest.raises(gr.Error, match="Cannot load model"):
        model_tab.load_model(Engine(), "no/such-model-xyz", "auto", "cpu", Session(), NoProgress())


def test_analyze_returns_heatmaps_and_csvs(loaded):
    engine, session, _ = loaded
    analysis, module, pfig, rfig, afig, files = similarity_tab.analyze(
        engine, session, PROMPTS, "all", "cosine", progress=NoProgress()
    )
    assert analysis["param"]["all"].shape == (6, 6)
    assert analysis["rep"]["cosine"].shape == (7, 7)
    assert isinstance(pfig, go.Figure) and pfig.data[0].z.shape == (6, 6)
    assert rfig.data[0].z.shape == (6, 6)  # hidden states (7) shown in layer numbering
    # cell (a, b) = cos(state entering layer a, state leaving layer b)
    assert rfig.data[0].z[1][3] == pytest.approx(analysis["rep"]["cosine"][1][4])
    assert len(afig.data) == 2
    names = {Path(f).name for f in files}
    assert {"param_similarity_all.csv", "representation_cosine.csv"} <= names
    frame = pd.read_csv(
        next(f for f in files if f.endswith("param_similarity_all.csv")), index_col=0
    )
    assert frame.shape == (6, 6)
    # switching selectors only re-plots
    bi = similarity_tab.replot_rep(analysis, "Block Influence")
    assert len(bi.data[0].y) == 6
    att = similarity_tab.replot_param(analysis, "attention")
    assert att.data[0].z.shape == (6, 6)


def test_analyze_needs_prompts(loaded):
    engine, session, _ = loaded
    with pytest.raises(gr.Error, match="calibration prompt"):
        similarity_tab.analyze(engine, session, "  \n ", "all", "cosine", progress=NoProgress())


def test_add_range_merges_sorted_and_rejects_garbage():
    assert plan_editor.add_range([4, 2], "0-1") == "0-1, 2-4"
    with pytest.raises(gr.Error, match="LO-HI"):
        plan_editor.add_range([1, 2], "x-y")


def run(gen):
    """Every update of a generator handler; the last one is the result."""
    return list(gen)


def test_preview_build_compare_evaluate_export(loaded, tmp_path):
    engine, session, _ = loaded
    md, strip, store, fig, chips = plan_editor.preview(
        engine, session, {}, "parameters", "1-3", "official", PROMPTS, {}
    )
    assert "| layers | 6 | **4** |" in md and "cosine" in md
    assert len(strip.data) > 6 and len(store) == 2  # the plan and its one range
    bad, blank, *_ = plan_editor.preview(
        engine, session, {}, "parameters", "1-3, 3-4", "official", PROMPTS, {}
    )
    assert "error" in bad and "layers" not in bad  # an invalid plan blanks the preview
    fitted, *_ = plan_editor.preview(
        engine, session, {}, "parameters", "1-3", "drop_lsq", PROMPTS, {}
    )
    dropped, *_ = plan_editor.preview(engine, session, {}, "parameters", "1-3", "drop", PROMPTS, {})
    assert "plain drop" in fitted and "plain drop" not in dropped
    assert fitted.split("cosine")[1][:12] == dropped.split("cosine")[1][:12]  # same estimate

    steps = run(collapse_build.build_collapse(engine, session, "1-3", "official", PROMPTS))
    session, bar, result, info = steps[-1]
    did = info["id"]
    assert "Built" in bar and steps[0][2] == ""  # the stale result was cleared first
    assert session.current == did and "6 → 4 layers" in result
    assert set(info["metrics"]) == {
        *("cal_kl", "cal_top1", "cal_cos", "cal_src", "valid_ratio", "valid_text")
    }
    assert info["metrics"]["cal_src"] == "3 calibration prompts"
    assert f"**{info['metrics']['valid_ratio']:.2f}×** the original's" in result
    # past the cliff the build says so on one loud line
    assert ("WARNING" in result) == (info["metrics"]["valid_ratio"] > 3)
    assert engine.get(did, session.token()).model.config.num_hidden_layers == 4
    with pytest.raises(Exception, match="Unknown model id"):
        engine.get(did)  # another owner (here: none) cannot use this session's build

    steps = run(
        compare_tab.compare(
            engine, session, [did], "hello there", 6, False, 1.0, 1.0, 0, 0, False, 1.0
        )
    )
    last = steps[-1]
    answers, stats = last[8:12], last[12:16]
    assert len(steps) >= 2 and "laco-answer" in answers[0] and "laco-answer" in answers[1]
    assert "tok/s" in stats[0] and "done" in stats[1] and stats[2] == ""

    session, bar, emd, metrics, table, chart, note = run(
        evaluate_tab.evaluate(engine, session, did, "pasted text", TEXT, None, 64, 0)
    )[-1]
    assert "Scored" in bar
    assert metrics["ppl"] > 1 and metrics["ref_ppl"] > 1 and 0 <= metrics["top1_agreement"] <= 1
    assert list(table["id"]) == ["original", did]
    assert "ppl held-out" in table and "KL cal. (nats)" in table

    session, vmd, zipped, recipe = export_tab.export(engine, session, did, progress=NoProgress())
    assert "Reload-verified" in vmd and Path(zipped).suffix == ".zip"
    assert json.loads(Path(recipe).read_text())["info"]["layers_after"] == 4

    # the exported recipe loads back as a new build with equal logits
    session, loaded_md, _ = session_panel.load_files(
        engine, session, [recipe], progress=NoProgress()
    )
    assert "Loaded" in loaded_md and session.current != did
    import torch

    x = torch.randint(3, 250, (1, 10))
    with torch.no_grad():
        a = engine.get(did, session.token()).model(x).logits
        b = engine.get(session.current, session.token()).model(x).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_nothing_built_is_a_user_error(loaded):
    engine, session, _ = loaded
    with pytest.raises(gr.Error, match="Collapse tab"):
        list(compare_tab.compare(engine, session, [], "hi", 4, False, 1, 1, 0, 0, False, 1))
    with pytest.raises(gr.Error, match="Collapse tab"):
        export_tab.export(engine, session, None, progress=NoProgress())


def test_auto_search_streams_log_and_registers(loaded):
    engine, session, _ = loaded
    steps = list(
        auto_panel.run_auto(
            engine,
            session,
            PROMPTS,
            "official",
            "cosine",
            "paper",
            "layers",
            0,
            0,
            {"merge_count": 2, "low": 1, "threshold": 0.0},
            {"interval": 1},
        )
    )
    session, bar, log, md, strip = steps[-1]
    assert "Search done" in md and "<tr" in log and "Done" in bar
    assert "<th>cosine</th>" in log  # the score column is named by its objective
    assert "laco-accepted" in log  # accepted rows are highlighted
    assert session.current is not None and session.current.startswith("search")
    assert "cal_kl" in session.get(session.current).metrics  # every build has calibration figures
    model = engine.get(session.current, session.token()).model
    assert model.config.num_hidden_layers < 6


def test_push_checks_inputs_before_network(loaded):
    engine, session, _ = loaded
    session.add(Entry("collapse-9", "x", {"steps": [{"kind": "collapse"}]}))
    with pytest.raises(gr.Error, match="repo id"):
        export_tab.push(engine, session, "collapse-9", "noslash", "hf_x", True)
    with pytest.raises(gr.Error, match="token"):
        export_tab.push(engine, session, "collapse-9", "me/repo", "   ", True)


def test_evaluate_text_sources(tmp_path):
    assert len(evaluate_tab.eval_text("bundled held-out text", "", None, 100).split()) == 100
    f = tmp_path / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    assert evaluate_tab.eval_text("uploaded file", "", str(f)) == TEXT
    with pytest.raises(Exception, match="too short"):
        evaluate_tab.eval_text("pasted text", "two words", None)


def test_session_table_and_choices():
    s = Session()
    s.add(
        Entry(
            "collapse-1",
            "one",
            {
                "steps": [{"kind": "collapse", "method": "drop"}],
                "info": {
                    "plan": [[2, 4]],
                    "layers_before": 6,
                    "layers_after": 4,
                    "params_before": 100,
                    "params_after": 80,
                },
            },
            {"cal_kl": 0.123456, "ho_ppl": 12.5678, "ho_ratio": 1.256789},
        )
    )
    t = s.table()
    assert t.loc[0, "params removed %"] == 20.0 and t.loc[0, "ranges"] == "2-4"
    assert t.loc[0, "KL cal. (nats)"] == 0.123  # rounded, labelled by source
    assert t.loc[0, "ppl held-out"] == 12.57
    assert s.choices() == [("one", "collapse-1")] and s.current == "collapse-1"


def test_heatmap_off_diagonal_scale_and_strip():
    import numpy as np

    m = np.eye(4) + 0.01 * np.arange(16).reshape(4, 4)
    fig = plots.heatmap(m, "t", off_diagonal_scale=True)
    assert fig.data[0].zmax < 1
    strip = plots.strip_diagram([(0, 0), (1, 3), (4, 4)], 5)
    assert strip.layout.title.text == "5 layers → 3 layers"


def test_range_slider_value_and_schema():
    rs = RangeSlider(value=(3, 7), maximum=9)
    assert rs.value == [3, 7]
    assert rs.api_info()["maxItems"] == 2


def test_baselines_panel_on_tiny_model(tmp_path):
    engine, session, _ = tiny_session(tmp_path / "llama")
    steps = list(
        baselines_panel.run_baselines(engine, session, "30", ["shortgpt", "laco_paper"], 0)
    )
    session, bar, table, fig, pareto, overview = steps[-1]
    assert {"dense", "shortgpt"} <= set(table["method"])
    assert "params removed %" in table and "time (s)" in table
    removed = table.loc[table["method"] == "shortgpt", "params removed %"].iloc[0]
    assert 5 < removed < 60 and removed == round(removed, 1)  # a percentage, rounded
    assert len(fig.data) >= 1 and {d.name for d in pareto.data} >= {"baselines", "original"}
    with pytest.raises(gr.Error, match="between 0 and 100"):
        list(baselines_panel.run_baselines(engine, session, "150", ["shortgpt"], 0))
    with pytest.raises(gr.Error, match="percentages"):
        list(baselines_panel.run_baselines(engine, session, "a, b", ["shortgpt"], 0))


def test_analysis_is_memoised_per_model_and_prompts(loaded):
    engine, session, _ = loaded
    first = similarity_tab.compute(engine, session, ["a b c", "d e f"])
    assert similarity_tab.compute(engine, session, ["a b c", "d e f"]) is first
    other = similarity_tab.compute(engine, session, ["x y z"])
    assert other is not first and engine.usage()["caches"] > 0
