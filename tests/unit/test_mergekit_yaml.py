"""Plans to mergekit passthrough YAML and back: layouts, round trips and refusals."""

from __future__ import annotations

import random

import pytest
import yaml

from laco_core.errors import LacoError
from laco_core.exchange.interop_mergekit import expressible, kept_layers, plan_to_yaml, yaml_to_plan
from laco_core.registry import REGISTRY

DROP = REGISTRY.method("drop")


def slices_of(text: str) -> list[list[int]]:
    cfg = yaml.safe_load(text)
    assert cfg["merge_method"] == "passthrough"
    return [s["sources"][0]["layer_range"] for s in cfg["slices"]]


def test_drop_plan_gives_half_open_slices_of_kept_layers():
    text = plan_to_yaml("HuggingFaceTB/SmolLM2-135M-Instruct", 30, [(16, 18)], DROP, "bfloat16")
    assert slices_of(text) == [[0, 17], [19, 30]]
    assert yaml.safe_load(text)["dtype"] == "bfloat16"
    assert "layer_range: [0, 17]" in text  # written the way mergekit's examples write it
    # a range at the end and one at the start
    assert slices_of(plan_to_yaml("m", 6, [(0, 1), (3, 5)], DROP)) == [[0, 1], [2, 4]]
    assert kept_layers(6, [(0, 1), (3, 5)]) == [0, 2, 3]
    assert "dtype" not in yaml.safe_load(plan_to_yaml("m", 6, [(0, 1)], DROP))


def test_every_method_has_a_reason_and_only_drop_is_expressible():
    for name, method in REGISTRY.methods.items():
        ok, reason = expressible(method)
        assert ok == (name == "drop") and len(reason) > 20
    assert "HI's attention" in expressible(REGISTRY.method("official"))[1]
    with pytest.raises(LacoError, match="cannot express method 'official'"):
        plan_to_yaml("m", 6, [(1, 2)], REGISTRY.method("official"))
    with pytest.raises(LacoError, match="overlap"):
        plan_to_yaml("m", 6, [(1, 3), (3, 4)], DROP)


def test_round_trip_random_plans():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 40)
        plan, i = [], 0
        while i < n - 1:
            if rng.random() < 0.3:
                hi = min(n - 1, i + rng.randint(1, 4))
                plan.append((i, hi))
                i = hi + 1
            else:
                i += 1
        if not plan:
            continue
        text = plan_to_yaml("org/model", n, plan, DROP)
        assert yaml_to_plan(text, num_layers=n) == ("org/model", plan)
        if plan[-1][1] != n - 1:  # without the layer count, the last slice ends the model
            assert yaml_to_plan(text) == ("org/model", plan)


def config(*ranges, model="m", **extra) -> str:
    slices = [{"sources": [{"model": model, "layer_range": list(r)}]} for r in ranges]
    return yaml.safe_dump({"slices": slices, "merge_method": "passthrough", **extra})


@pytest.mark.parametrize(
    "ranges, plan",
    [
        ([(0, 6)], []),  # keeps everything
        ([(0, 1), (1, 2), (2, 3), (5, 6)], [(2, 4)]),  # one slice per layer
        ([(0, 2), (2, 2), (4, 6)], [(1, 3)]),  # an empty slice
        ([(0, 3)], [(2, 5)]),  # trailing layers dropped
        ([(0, 1), (3, 4), (5, 6)], [(0, 2), (3, 4)]),
    ],
)
def test_import_layouts(ranges, plan):
    assert yaml_to_plan(config(*ranges), num_layers=6) == ("m", plan)


def test_import_model_reference_forms():
    text = yaml.safe_dump(
        {
            "slices": [
                {
                    "sources": [
                        {
                            "model": {"model": {"path": "org/m", "revision": "abc"}},
                            "layer_range": [0, 2],
                        }
                    ]
                },
                {"sources": [{"model": "org/m@abc", "layer_range": [3, 4]}]},
            ],
            "merge_method": "passthrough",
            "base_model": "org/m@abc",
            "dtype": "float16",
            "tokenizer_source": "base",
        }
    )
    assert yaml_to_plan(text, 4) == ("org/m@abc", [(1, 2)])


@pytest.mark.parametrize(
    "text, message",
    [
        (config((0, 3), (3, 6), merge_method="linear"), "only 'passthrough'"),
        (config((0, 3), (2, 6)), "repeats layers"),
        (config((3, 6), (0, 3)), "reorders layers"),
        (config((0, 2), (0, 1)), "repeats layers"),
        (config((2, 6)), "drop the first layer"),
        (config((0, 7)), "has 6 layers"),
        (config((0, 3), model="a+lora"), "LoRA"),
        (config((0, 3), base_model="other"), "2 models"),
        (config((0, 3), parameters={"scale": 0.5}), "scale weights"),
        (config((3, 1)), "not a valid half-open range"),
        ("merge_method: passthrough\nmodels:\n- model: m\n", "uses models"),
        ("a: [", "Not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_import_refusals_are_clear(text, message):
    with pytest.raises(LacoError, match=message):
        yaml_to_plan(text, num_layers=6)


def test_import_refuses_two_models_and_two_sources():
    two = yaml.safe_dump(
        {
            "slices": [
                {"sources": [{"model": "a", "layer_range": [0, 2]}]},
                {"sources": [{"model": "b", "layer_range": [2, 4]}]},
            ],
            "merge_method": "passthrough",
        }
    )
    with pytest.raises(LacoError, match="reads 2 models"):
        yaml_to_plan(two)
    both = yaml.safe_dump(
        {
            "slices": [
                {
                    "sources": [
                        {"model": "a", "layer_range": [0, 2]},
                        {"model": "a", "layer_range": [2, 4]},
                    ]
                }
            ],
            "merge_method": "passthrough",
        }
    )
    with pytest.raises(LacoError, match="2 sources"):
        yaml_to_plan(both)
