"""Hub model cards: front matter (base model, inherited license), recipe, metrics, loading."""

from __future__ import annotations

import yaml

from laco_core.exchange.card import (
    LOADER_IMPORT,
    base_info_for,
    license_from_readme,
    model_card,
)
from laco_core.exchange.interop_mergekit import expressible
from laco_core.recipe import BaseRef, Recipe
from laco_core.registry import REGISTRY
from laco_core.steps.collapse import CollapseStep
from laco_core.steps.prune import PruneStep

INFO = {
    "plan": [[16, 18], [24, 26]],
    "layers_before": 30,
    "layers_after": 26,
    "params_before": 134515008,
    "params_after": 116816448,
    "dtype": "float32",
}
COLLAPSE = Recipe(BaseRef("default"), [CollapseStep([[16, 18], [24, 26]], "drop")], INFO)
OFFICIAL = Recipe(BaseRef("default"), [CollapseStep([[16, 18], [24, 26]], "official")], INFO)
PRUNE = Recipe(
    BaseRef("default"),
    [PruneStep(0.2, layers=[4, 28])],
    {"params_before": 134515008, "params_after": 108000000, "pruned": True},
)
METHODS = dict(REGISTRY.methods)
TABLE = "| model | laco_mc acc | average | % of dense |\n|---|---:|---:|---:|\n| default | 71.2 | 71.2 | 100.0 |\n"


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4 : card.index("\n---\n", 4)])


def test_collapsed_card_front_matter_and_body():
    card = model_card(
        COLLAPSE,
        {"ppl": 29.6012, "ref_ppl": 23.67, "kl": 0.2512, "params": 116816448, "seq_len": 256},
        TABLE,
        base_info_for("default"),
        methods=METHODS,
        passthrough=expressible(REGISTRY.method("drop")),
        repo_id="me/smol-c",
    )
    meta = front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["license"] == "apache-2.0"
    assert meta["library_name"] == "transformers"
    assert {"laco", "layer-collapse", "laco-drop"} <= set(meta["tags"])
    assert "# Layer-collapsed SmolLM2-135M-Instruct" in card
    assert "16-18, 24-26" in card and "30 → 26" in card and "13.2 % removed" in card
    assert "| perplexity | 29.601 |" in card and "256-token windows" in card
    assert "| default | 71.2 | 71.2 | 100.0 |" in card
    assert 'AutoModelForCausalLM.from_pretrained("me/smol-c")' in card
    assert "mergekit_config.yml" in card  # drop is a passthrough plan
    assert "load_pruned" not in card


def test_official_method_says_mergekit_cannot_express_it():
    passthrough = (False, f"`official` {REGISTRY.method('official').passthrough}")
    card = model_card(OFFICIAL, None, None, {"id": "org/base"}, passthrough=passthrough)
    assert "cannot reproduce this model" in card and "HI's attention" in card
    assert "Not measured at export time." in card
    meta = front_matter(card)
    assert meta["base_model"] == "org/base" and "license" not in meta
    assert "check the base model's license" in card


def test_width_pruned_card_points_at_our_loader():
    card = model_card(PRUNE, {"ppl": 40.0}, None, base_info_for("default"), repo_id="me/p20")
    assert LOADER_IMPORT in card
    assert 'load_pruned(snapshot_download("me/p20"))' in card
    assert "laco_shapes.json" in card and "cannot load this model" in card
    assert "per-layer-shapes" in front_matter(card)["tags"]
    assert "# Pruned SmolLM2-135M-Instruct" in card


def test_license_inherited_from_a_local_base_models_card(tmp_path):
    (tmp_path / "README.md").write_text(
        "---\nlicense: other\nlicense_name: some-community-license\n"
        "license_link: https://example.org/LICENSE\ntags: [x]\n---\n# Base\n"
    )
    info = base_info_for(str(tmp_path))
    assert info["id"] is None and info["license"] == "other"
    meta = front_matter(model_card(COLLAPSE, None, None, info))
    assert meta["license_name"] == "some-community-license"
    assert meta["license_link"] == "https://example.org/LICENSE"
    assert "base_model" not in meta  # a local folder is not a Hub id
    assert license_from_readme("# no front matter") == {}
    assert base_info_for("org/name") == {"id": "org/name", "name": "name"}


def test_card_states_a_sessions_findings_with_their_sources():
    findings = {
        "heldout": {
            "ppl": 27.1,
            "ref_ppl": 23.674,
            "ratio": 1.1447,
            "kl": 0.2,
            "top1": 81.5,
            "text": "bundled held-out text, all of it, 256-token windows",
        },
        "calibration": {"kl": 0.05, "top1": 90.0, "text": "3 calibration prompts"},
        "validation": {"ratio": 3.5, "text": "valid_paragraphs"},
        "lmeval": {
            "model": {"laco_mc": {"acc": 0.769, "acc_stderr": 0.059, "samples": 52}},
            "dense": {"laco_mc": {"acc": 0.731, "acc_stderr": 0.062, "samples": 52}},
        },
    }
    recipe = Recipe(COLLAPSE.base, COLLAPSE.steps, {**INFO, "findings": findings})
    card = model_card(recipe, None, None, base_info_for("default"))
    assert "Not measured" not in card
    assert "measured on bundled held-out text, all of it, 256-token windows" in card
    assert "| perplexity | 27.10 |" in card and "| perplexity ÷ base model's | 1.145× |" in card
    assert "| base model perplexity (same text) | 23.67 |" in card
    assert "On 3 calibration prompts, when it was built: KL(base ‖ this) 0.0500" in card
    assert "valid_paragraphs" in card and "WARNING" in card  # past the cliff: said loudly
    assert "on laco_mc (52 questions)" in card and "Within noise" in card
    assert "| this model | 76.9 ± 5.9 | 76.9 ± 5.9 | 105 % (within noise) | 52 |" in card
