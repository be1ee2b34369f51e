"""Crafted files: recipes, sidecars, mergekit configs, session files and share links made to
break the app, each refused by the one schema check with the exact line a person gets.

CLI cases run ``laco rebuild`` in process: exit 2, one ``laco: error:`` line, no traceback,
no output folder, and (for every case refused before loading) no model loaded. App cases go
through ``/load_session`` of the real app: the message arrives as the ``AppError``, no build
is registered, and the app answers another session right after.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from laco_core import schema
from laco_core.cli import main
from laco_core.errors import LacoError
from laco_core.recipe import RECIPE_FILE, TENSORS_FILE
from tests.reliability.common import load_tiny

Q = "model.layers.0.self_attn.q_proj"
A, B = f"{Q}.lora_A", f"{Q}.lora_B"
SIDECAR = "laco_recipe.safetensors"
NAME_RULE = "must be a name (letters, digits, _ . -)"


def recipe(spec: str, steps, **top) -> dict:
    """A recipe's JSON on the 6-layer tiny model at ``spec``."""
    base = {"spec": spec, "dtype": "float32", "device": "cpu", "num_layers": 6}
    return {"format": "laco-recipe", "version": 2, "base": base, "steps": steps, **top}


def collapse(**fields) -> dict:
    return {"kind": "collapse", "ranges": [[1, 2]], "method": "official", **fields}


def heal(**fields) -> dict:
    refs = {A: {"$tensor": "a"}, B: {"$tensor": "b"}}
    return {"kind": "heal", "steps": 3, "rank": 2, "adapters": refs, "scaling": 2.0, **fields}


def factors(a=None, b=None) -> dict[str, torch.Tensor]:
    """LoRA factors of rank 2 on the tiny model's q_proj (hidden 32)."""
    return {
        "a": torch.zeros(2, 32) if a is None else a,
        "b": torch.zeros(32, 2) if b is None else b,
    }


def nested(depth: int):
    out: object = 0
    for _ in range(depth):
        out = {"x": out}
    return out


@dataclass
class Case:
    """A crafted recipe (JSON content or raw text, optional sidecar) and its exact message."""

    name: str
    content: object  # (spec) -> dict | str
    message: str
    tensors: dict | None = None
    file: str = RECIPE_FILE


CASES = [
    Case(
        "steps as a string",
        lambda s: recipe(s, "collapse 1-2"),
        "The recipe's 'steps' must be a list of steps, not 'collapse 1-2'.",
    ),
    Case(
        "steps as a dict",
        lambda s: recipe(s, {"kind": "collapse"}),
        "The recipe's 'steps' must be a list of steps, not {'kind': 'collapse'}.",
    ),
    Case(
        "version null",
        lambda s: recipe(s, [collapse()], version=None),
        "The recipe's 'version' must be a whole number from 1, not None.",
    ),
    Case(
        "version a string",
        lambda s: recipe(s, [collapse()], version="2"),
        "The recipe's 'version' must be a whole number from 1, not '2'.",
    ),
    Case(
        "version negative",
        lambda s: recipe(s, [collapse()], version=-3),
        "The recipe's 'version' must be a whole number from 1, not -3.",
    ),
    Case(
        "boolean layer index",
        lambda s: recipe(s, [collapse(ranges=[[True, 3]])]),
        "Step 1 (collapse): 'ranges' must be a list of [lo, hi] pairs of whole numbers, "
        "not [[True, 3]].",
    ),
    Case(
        "float layer index",
        lambda s: recipe(s, [collapse(ranges=[[1.5, 3.2]])]),
        "Step 1 (collapse): 'ranges' must be a list of [lo, hi] pairs of whole numbers, "
        "not [[1.5, 3.2]].",
    ),
    Case(
        "an integer where ranges belong",
        lambda s: recipe(s, [collapse(ranges=5)]),
        "Step 1 (collapse): 'ranges' must be a list, not 5.",
    ),
    Case(
        "a string where texts belong",
        lambda s: recipe(s, [collapse(calibration={"texts": "one text"})]),
        "Step 1 (collapse): 'calibration.texts' must be a list, not 'one text'.",
    ),
    Case(
        "range beyond the base",
        lambda s: recipe(s, [collapse(ranges=[[4, 9]])]),
        "Step 1 (collapse): 'ranges' names layer 9; the base model has layers 0 to 5.",
    ),
    Case(
        "keep list unsorted",
        lambda s: recipe(s, [{"kind": "drop", "selector": "mergekit", "keep": [5, 2]}]),
        "Step 1 (drop): 'keep' must list layers in increasing order, each once, not [5, 2].",
    ),
    Case(
        "keep list with a huge negative entry",
        lambda s: recipe(s, [{"kind": "drop", "selector": "mergekit", "keep": [-(10**9), 2]}]),
        "Step 1 (drop): 'keep' names layer -1,000,000,000; the base model has layers 0 to 5.",
    ),
    Case(
        "HTML in the selector label",
        lambda s: recipe(s, [{"kind": "drop", "selector": "<img src=x onerror=alert(1)>"}]),
        f"Step 1 (drop): 'selector' {NAME_RULE}, not '&lt;img src=x onerror=alert(1)&gt;'.",
    ),
    Case(
        "device meta",
        lambda s: {**recipe(s, [collapse()]), "base": {"spec": s, "device": "meta"}},
        "The recipe's base device 'meta' is not one of auto, cpu, cuda, cuda:N, mps.",
    ),
    Case(
        "deep nesting",
        lambda s: recipe(s, [collapse()], info=nested(100)),
        f"The recipe nests deeper than {schema.MAX_DEPTH} levels.",
    ),
    Case(
        "nesting beyond the JSON reader",
        lambda s: "[" * 100_000 + "]" * 100_000,
        f"'{RECIPE_FILE}' nests too deeply to be a recipe.",
    ),
    Case(
        "huge LoRA rank",
        lambda s: recipe(s, [collapse(), heal(rank=10_000_000, adapters=None)]),
        "Step 2 (heal): 'rank' is 10,000,000; it must be between 1 and 256.",
    ),
    Case(
        "unknown heal schedule",
        lambda s: recipe(s, [collapse(), heal(schedule="linear", adapters=None)]),
        "Step 2 (heal): 'schedule' is 'linear'; it must be one of constant, cosine.",
    ),
    Case(
        "unknown heal precision",
        lambda s: recipe(s, [collapse(), heal(precision="half", adapters=None)]),
        "Step 2 (heal): 'precision' is 'half'; it must be one of auto, float32, bfloat16.",
    ),
    Case(
        "huge heal steps",
        lambda s: recipe(s, [heal(steps=10_000_000, adapters=None)]),
        "Step 1 (heal): Heal steps: 10,000,000 steps, over the limit of 5,000 "
        "(LACO_MAX_HEAL_STEPS raises it on a self-hosted instance).",
    ),
    Case(
        "huge pruning window",
        lambda s: recipe(s, [{"kind": "prune", "seq_len": 10_000_000}]),
        "Step 1 (prune): The pruning window: 10,000,000 tokens, over the limit of 4,096 "
        "(LACO_MAX_SEQ_LEN raises it on a self-hosted instance).",
    ),
    Case(
        "adapter naming a server path",
        lambda s: recipe(s, [heal(adapters={A: "/etc/passwd", B: "/etc/passwd"})]),
        f"Step 1 (heal): adapter '{A}' must be a tensor in {TENSORS_FILE}, not '/etc/passwd'.",
    ),
    Case(
        "adapter of the wrong shape",
        lambda s: recipe(s, [heal()]),
        f"Step 1 (heal): adapter '{A}' has shape [3, 32]; a rank-2 LoRA factor is 2-D with 2 rows.",
        factors(a=torch.zeros(3, 32)),
    ),
    Case(
        "NaN in the sidecar",
        lambda s: recipe(s, [heal()]),
        f"{SIDECAR}: tensor 'a' holds NaN or infinite values.",
        factors(a=torch.full((2, 32), float("nan"))),
    ),
    Case(
        "Inf in the sidecar",
        lambda s: recipe(s, [heal()]),
        f"{SIDECAR}: tensor 'b' holds NaN or infinite values.",
        factors(b=torch.full((32, 2), float("inf"))),
    ),
    Case(
        "sidecar tensor of the wrong dtype",
        lambda s: recipe(s, [heal()]),
        f"{SIDECAR}: tensor 'a' is int64; a recipe holds float32, bfloat16 or float16 tensors.",
        factors(a=torch.zeros(2, 32, dtype=torch.int64)),
    ),
    Case(
        "sidecar tensor missing",
        lambda s: recipe(s, [heal()]),
        f"{SIDECAR} lacks the tensor 'b' the recipe names.",
        {"a": torch.zeros(2, 32)},
    ),
    Case(
        "mergekit layer_range of 30,000,000",
        lambda s: (
            "merge_method: passthrough\nslices:\n"
            f"  - sources:\n      - model: {s}\n        layer_range: [0, 30000000]\n"
        ),
        "Slice 0: layer_range [0, 30000000) reaches past 1024 layers, more than any model has.",
        file="mergekit_config.yml",
    ),
]


@pytest.fixture(scope="module")
def tiny(files):
    return str(files.tiny)


def write(case: Case, folder, spec: str):
    """The case's files in ``folder``; returns the path to hand in."""
    folder.mkdir(parents=True, exist_ok=True)
    content = case.content(spec)
    path = folder / case.file
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    if case.tensors is not None:
        save_file(case.tensors, str(folder / TENSORS_FILE))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_refuses_crafted_recipe_before_loading(case, tiny, tmp_path, capsys, monkeypatch):
    loads = []
    monkeypatch.setattr("laco_core.commands.rebuild.load_model", lambda *a, **k: loads.append(a))
    path = write(case, tmp_path / "in", tiny)
    out = tmp_path / "out"
    started = time.perf_counter()
    code = main(["rebuild", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert err.count("laco: error:") == 1
    assert err.strip().splitlines()[-1] == f"laco: error: {case.message}"
    assert not loads and not out.exists()  # refused before any model work, nothing written
    assert time.perf_counter() - started < 5


def test_cli_device_meta_is_refused(tiny, tmp_path, capsys):
    path = write(CASES[0], tmp_path / "in", tiny)
    path.write_text(json.dumps(recipe(tiny, [collapse()])))
    out = tmp_path / "out"
    assert main(["rebuild", str(path), "--device", "meta", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "laco: error: Unknown device 'meta'; use auto, cpu, cuda or mps."
    assert not out.exists()


def test_good_recipe_passes_the_check(tiny):
    """The check refuses crafted files, not ours: a recipe as the tools write it passes."""
    from laco_core.pipeline import recipe_from_dict

    d = recipe(tiny, [collapse(calibration={"asset": "train_paragraphs", "limit": 4})])
    d["steps"].append({"kind": "drop", "selector": "mergekit", "keep": [0, 1, 3, 4]})
    assert recipe_from_dict(d).describe() == "collapse 1-2 (official) → mergekit: keep 4 layers"


def test_markdown_escape():
    assert schema.md_escape("<b>x</b> [a](b)") == r"&lt;b&gt;x&lt;/b&gt; \[a\]\(b\)"


# ---- the app: /load_session ------------------------------------------------------------------

APP_CASES = [c for c in CASES if c.name in ("steps as a dict", "version null", "device meta")]
APP_CASES += [c for c in CASES if c.name in ("NaN in the sidecar", "huge LoRA rank")]
APP_CASES += [c for c in CASES if c.name.startswith("mergekit")]


@pytest.fixture(scope="module")
def clients(app, files):
    crafted = app.client()
    load_tiny(crafted, files.tiny)
    return SimpleNamespace(crafted=crafted, good=app.client())


def _upload(paths):
    from gradio_client import handle_file

    return [handle_file(str(p)) for p in paths]


def _refused(app, clients, files, paths, message: str) -> None:
    from gradio_client.exceptions import AppError

    before = len(app.engine._builds)
    with pytest.raises(AppError) as info:
        clients.crafted.predict(_upload(paths), api_name="/load_session")
    assert str(info.value) == message
    assert len(app.engine._builds) == before  # nothing registered, nothing built
    assert load_tiny(clients.good, files.tiny)["layers"] == 6  # the app keeps serving


@pytest.mark.parametrize("case", APP_CASES, ids=[c.name for c in APP_CASES])
def test_app_refuses_crafted_recipe(case, app, clients, files, tmp_path):
    path = write(case, tmp_path, str(files.tiny))
    paths = [path] + ([tmp_path / TENSORS_FILE] if case.tensors is not None else [])
    _refused(app, clients, files, paths, case.message)


def test_app_refuses_crafted_session_file(app, clients, files, tmp_path):
    builds = [{"id": "collapse-1", "label": "x", "recipe": recipe(str(files.tiny), "x")}]
    path = tmp_path / "laco_session.json"
    path.write_text(json.dumps({"format": "laco-session", "version": 1, "builds": builds}))
    message = "Session build 1 (collapse-1): The recipe's 'steps' must be a list of steps, not 'x'."
    _refused(app, clients, files, [path], message)


def test_session_file_names_no_engine_build(app, files):
    """A session file naming another session's build id gets a build of its own recipe."""
    from components import session_panel
    from components.common import model_of
    from components.state import Session
    from laco_core.pipeline import recipe_from_dict

    other = Session()
    theirs = app.engine.add_recipe(
        recipe_from_dict(recipe(str(files.tiny), [collapse()])), other.token()
    )
    mine = Session()
    mine_recipe = recipe(str(files.tiny), [collapse(ranges=[[0, 3]])])
    d = {"format": "laco-session", "builds": [{"id": theirs, "label": "x", "recipe": mine_recipe}]}
    session, _, _ = session_panel._merge_session(app.engine, mine, d)
    did, model, _ = model_of(app.engine, session, theirs)
    assert did != theirs and model.config.num_hidden_layers == 3  # its own recipe, not theirs
    assert app.engine.build(theirs, other.token()).owner == other.token()
    app.engine.forget(did, mine.token())
    app.engine.forget(theirs, other.token())


def _packed(d) -> str:
    """``d`` packed as a link's ``recipe=`` parameter, with nothing left out."""
    import base64
    import zlib

    raw = d if isinstance(d, bytes) else json.dumps(d).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


LINK_CASES = [
    (
        {"plan": "0-30000000"},
        "The link's plan: layer_range [0, 30000001) reaches past 1024 layers, more than any "
        "model has.",
    ),
    ({"recipe": "A" * 5000}, "The link's recipe is longer than 4,096 characters."),
    ({"recipe": "%%%%"}, "The link's recipe cannot be read: copy the whole link."),
    ({"recipe": _packed(b" " * 1_000_000)}, "The link's recipe unpacks past 65,536 bytes."),
    (
        {"recipe": _packed(recipe("default", [collapse(ranges=[[4, 9]])]))},
        "Step 1 (collapse): 'ranges' names layer 9; the base model has layers 0 to 5.",
    ),
    (
        {"recipe": _packed(recipe("default", [heal()]))},
        "A link's recipe carries no weights; this one names tensors.",
    ),
]


@pytest.mark.parametrize(("query", "message"), LINK_CASES, ids=lambda v: str(v)[:24])
def test_crafted_link_is_refused_with_one_line(query, message):
    from components import links

    with pytest.raises(LacoError) as info:
        links.read(query, 6)
    assert str(info.value) == message
    assert links.safe_read(query, 6)["plan"] is None  # the page opens without it


def test_share_link_attention_beyond_any_model_is_dropped():
    from components import links

    link = links.read({"plan": "1-2", "attn": "3,99999999"}, 0)
    assert (link["plan"], link["attn"]) == ("1-2", "3")


UI_CASES = [
    ("x", "The session's 'ui' and 'ui.params' must be mappings, not 'x'."),
    ({"plan": 5}, "The session's 'ui.plan' must be a text of ≤ 1000 characters."),
    ({"prompt": "x" * 5000}, "The session's 'ui.prompt' must be a text of ≤ 4000 characters."),
    ({"params": [1]}, "The session's 'ui' and 'ui.params' must be mappings, not {'params': [1]}."),
    ({"params": {"alpha": [1]}}, "The session's 'ui.params' 'alpha' must hold a number or text."),
    ({"params": {"a<b": 1}}, "The session's 'ui.params' 'a&lt;b' must hold a number or text."),
]


@pytest.mark.parametrize(("ui", "message"), UI_CASES, ids=lambda v: str(v)[:24])
def test_crafted_session_page_is_refused(ui, message):
    from components.state import Session

    d = {"format": "laco-session", "version": 1, "builds": [], "ui": ui}
    with pytest.raises(LacoError) as info:
        schema.check_session(d, {})
    assert str(info.value) == message
    assert Session.from_dict(d).ui == {}  # what a browser kept: dropped, not shown
