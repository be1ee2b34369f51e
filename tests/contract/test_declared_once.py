"""Settings declared once: a merge method with a setting and a strategy with a setting,
registered for this test alone (``Registry.registered``), reach every place that uses
settings with no other edit: ``laco auto --help`` and ``laco collapse --help``, the app's
controls (Build, expert search), the live preview, a search and a collapse, and a recipe
rebuilt from its JSON."""

from __future__ import annotations

import contextlib
import io

import gradio as gr
import pytest
import torch

import app
from components import auto_panel, model_tab
from components.common import base_of
from components.state import Session
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.cli import build_parser, main
from laco_core.commands.auto import config_of
from laco_core.errors import LacoError
from laco_core.methods.base import LayerParams, MergeMethod
from laco_core.params import ParamDef
from laco_core.pipeline import context, rebuild, recipe_from_dict
from laco_core.pipeline import run as run_steps
from laco_core.recipe import TextSource
from laco_core.registry import REGISTRY
from laco_core.runtime.engine import Engine
from laco_core.search.config import SearchConfig
from laco_core.search.strategies.base import Strategy
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.search import SearchStep

PROMPTS = ["The cat sat on the mat.", "A river runs through the old town."]


class Scaled(MergeMethod):
    """Keeps layer lo with its MLP output projection scaled by ``gain`` (a toy)."""

    name = "toy_scaled"
    summary = "Layer lo with its MLP output scaled by a gain."
    formula = "θ*_lo = θ_lo, W_down ← gain · W_down"
    keeps_lo = True
    params = (ParamDef("toy_gain", "float", 1.0, 0.0, 2.0, help="scale of the MLP output"),)

    def merge(self, layers: list[LayerParams], adapter, toy_gain: float = 1.0) -> LayerParams:
        return {
            n: t * toy_gain if n.endswith("down_proj.weight") else t for n, t in layers[0].items()
        }


class Fixed(Strategy):
    """Merges C layers starting ``toy_offset`` layers above L, once (a toy)."""

    name = "toy_fixed"
    summary = "One merge of C layers, toy_offset layers above L."
    params = (ParamDef("toy_offset", "int", 0, 0, 64, help="layers above L the merge starts"),)
    uses = ("merge_count", "low")

    def run(self, s) -> None:
        lo = s.cfg.low + s.settings["toy_offset"]
        hi = lo + s.cfg.merge_count - 1
        s.inputs_at(hi)
        score, params, _ = s.evaluate(lo, hi, s.params)
        s.log(lo, hi, score, True, params, None)
        s.accept(lo, hi, score, params)


@pytest.fixture
def toys():
    with REGISTRY.registered(methods={"toy_scaled": Scaled()}, strategies={"toy_fixed": Fixed()}):
        yield


def help_of(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--help"]) == 0
    return out.getvalue()


def test_registration_is_undone_and_names_stay_unique(toys):
    assert "toy_scaled" in REGISTRY.methods and "toy_fixed" in REGISTRY.strategies
    with pytest.raises(Exception, match="registered already"):
        with REGISTRY.registered(methods={"drop": Scaled()}):
            pass
    assert REGISTRY.method("drop").name == "drop"  # the refused name was left as it was


def test_settings_reach_the_command_line(toys):
    auto = help_of("auto")
    assert "--toy-offset" in auto and "layers above L the merge starts (toy_fixed" in auto
    assert "--toy-gain" in auto and "toy_fixed" in auto.split("--strategy")[1]
    assert "--toy-gain" in help_of("collapse")


def test_flags_land_checked_in_the_search_config(toys):
    argv = ["auto", "--strategy", "toy_fixed", "--toy-offset", "2", "--objective", "kl"]
    cfg = config_of(build_parser().parse_args([*argv, "--stride", "1", "-C", "3"]))
    assert cfg.strategy_params == {"toy_offset": 2} and cfg.objective_params == {"stride": 1}
    assert cfg.merge_count == 3
    with pytest.raises(LacoError, match="--toy-offset does not apply to greedy"):
        config_of(build_parser().parse_args(["auto", "--strategy", "greedy", "--toy-offset", "1"]))
    with pytest.raises(LacoError, match="toy_offset must be a number in"):
        config_of(build_parser().parse_args([*argv[:4], "99"]))


def test_settings_reach_the_app_controls(toys):
    demo = app.build_app(Engine())
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert "toy offset" in labels and "toy gain" in labels
    *_, methods = auto_panel.visibility("toy_fixed", 0, 0, "toy_scaled")
    assert methods["value"] == "toy_scaled"
    assert "toy_fixed" in str(demo.config)  # offered in the strategy dropdown


def test_preview_search_and_rebuilt_recipe_use_the_settings(toys, tmp_path):
    path = tmp_path / "llama"
    tiny_model("llama", layers=6).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    engine = Engine()
    session, _, _ = model_tab.load_model(engine, str(path), "float32", "cpu", Session())
    base = base_of(engine, session)
    # the preview: the gain changes the estimate, and equals a direct build with it
    one = engine.preview(base, PROMPTS, [(2, 3)], "toy_scaled", toy_gain=1.0)
    half = engine.preview(base, PROMPTS, [(2, 3)], "toy_scaled", toy_gain=0.5)
    assert one["kl"] != pytest.approx(half["kl"])
    with pytest.raises(Exception, match="toy_gain"):
        engine.preview(base, PROMPTS, [(2, 3)], "toy_scaled", toy_gain=7.0)
    # a search with the toy strategy and method, their settings in the recipe
    cfg = SearchConfig(
        strategy="toy_fixed",
        method="toy_scaled",
        merge_count=2,
        low=1,
        strategy_params={"toy_offset": 2},
        method_params={"toy_gain": 0.5},
    )
    steps = [
        SearchStep(cfg, TextSource.of(PROMPTS)),
        CollapseStep([[0, 1]], "toy_scaled", {"toy_gain": 1.5}),
    ]
    model, recipe = run_steps(base, steps, context(base))
    assert recipe.steps[0].plan == [[3, 4]]  # L + toy_offset
    saved = recipe.to_dict()[0]
    assert saved["steps"][0]["config"]["strategy_params"] == {"toy_offset": 2}
    assert saved["steps"][1]["params"] == {"toy_gain": 1.5}
    again, _, _ = rebuild(recipe_from_dict(saved), lambda ref: base)
    ids = tiny_tokenizer()("the cat", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=1e-6, rtol=0)
    with pytest.raises(gr.Error, match="toy_offset"):
        list(
            auto_panel.run_auto(
                engine,
                session,
                "\n".join(PROMPTS),
                "toy_scaled",
                "cosine",
                "toy_fixed",
                "layers",
                0,
                0,
                {"merge_count": 2},
                {"toy_offset": 99},
            )
        )
