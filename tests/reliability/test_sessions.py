"""Sessions through the real app: isolation of builds, a build's own base wherever it is
used, and eight concurrent clients that each see only their own results."""

from __future__ import annotations

import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from components.compare_tab import panel_html
from laco_core.analysis.generate import DecodeSettings, first_divergence, stream_pair
from laco_core.errors import LacoError
from laco_core.loading.models import load_model
from laco_core.ops import build_collapsed
from tests.reliability.common import TEXT, build, load_tiny


def _cmp_args(did: str, prompt: str = "hello", new: int = 6):
    return (did, prompt, new, False, 0.7, 0.9, 50, 0, True, 1.0)


def test_another_sessions_build_is_unknown(app, files):
    from gradio_client.exceptions import AppError

    alice, bob = app.client(), app.client()
    load_tiny(alice, files.tiny)
    load_tiny(bob, files.tiny)
    did = build(alice, "2-3")["id"]
    unknown = f"Unknown model id '{did}': build or load one first."
    for endpoint, args in (
        ("/compare", _cmp_args(did)),
        ("/evaluate", (did, "pasted text", TEXT, None, 64, 0)),
        ("/export", (did,)),
    ):
        with pytest.raises(AppError) as info:
            bob.submit(*args, api_name=endpoint).result()
        assert str(info.value) == unknown, endpoint
    # the engine refuses it too, whoever asks with another owner token
    for ask in (app.engine.build, app.engine.model, app.engine.recipe):
        with pytest.raises(LacoError, match=f"^Unknown model id '{did}'"):
            ask(did, "someone-else")
    # Alice still uses it
    *_, note = alice.submit(*_cmp_args(did), api_name="/compare").result()
    assert "diverge" in note or "Identical" in note


def test_old_build_keeps_its_own_base_after_switching(app, files, tmp_path):
    """Export, compare and evaluate of a build made before the session switched base model
    use the build's own base and tokenizer, and the verification is against that base."""
    client = app.client()
    load_tiny(client, files.tiny)
    did = build(client, "1-3")["id"]
    info = load_tiny(client, files.other)  # another architecture, layer count and tokenizer
    assert info["layers"] == 4 and info["model_type"] == "qwen2"

    md, zipped, recipe_file = client.predict(did, api_name="/export")
    assert md.startswith("### ✓ Reload-verified")
    recipe = json.loads(Path(recipe_file).read_text())
    assert recipe["base"]["spec"] == str(files.tiny)
    assert (recipe["info"]["layers_before"], recipe["info"]["layers_after"]) == (6, 4)
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    tok = AutoTokenizer.from_pretrained(folder)
    assert "<base_b>" not in tok.get_vocab()  # the build's tokenizer, not the new base's
    exported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    base = load_model(str(files.tiny), "float32", "cpu")
    expected = build_collapsed(base.model, [(1, 3)], "official")
    ids = torch.randint(3, 250, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, expected(ids).logits, atol=1e-5)

    # compare streams the build against its own base with its own tokenizer
    a, b, *_ = client.submit(*_cmp_args(did), api_name="/compare").result()
    settings = DecodeSettings(6, False, 0.7, 0.9, 50, 0, True, 1.0)
    *_, (want_a, want_b) = stream_pair(base.model, expected, base.tokenizer, "hello", settings)
    k = first_divergence(want_a.token_ids, want_b.token_ids)
    prefix = (
        base.tokenizer.decode(want_b.token_ids[:k], skip_special_tokens=True)
        if k is not None
        else None
    )
    assert a == panel_html(want_a.text)
    assert b == panel_html(want_b.text, k, prefix)

    _, metrics, table, _ = client.predict(
        did, "pasted text", TEXT, None, 64, 0, api_name="/evaluate"
    )
    assert metrics["ref_params"] == base.num_params


def test_eight_concurrent_clients_see_only_their_own_results(app, files):
    plans = ["0-1", "1-2", "2-3", "3-4", "4-5", "0-2", "1-3", "3-5"]

    def session(plan: str) -> dict:
        c = app.client()
        load_tiny(c, files.tiny)
        built = build(c, plan)
        did = built["id"]
        a, b, *_ = c.submit(*_cmp_args(did, new=4), api_name="/compare").result()
        _, metrics, table, _ = c.predict(
            did, "pasted text", TEXT, None, 64, 0, api_name="/evaluate"
        )
        return {"plan": plan, "did": did, "built": built, "table": table, "answer": b}

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(session, plans))
    ids = [r["did"] for r in results]
    assert len(set(ids)) == 8
    for r in results:
        lo, hi = (int(x) for x in r["plan"].split("-"))
        assert r["built"]["recipe"]["info"]["plan"] == [[lo, hi]]
        rows = r["table"]["data"]
        headers = r["table"]["headers"]
        assert [row[headers.index("id")] for row in rows] == [r["did"]]  # only its own build
        assert rows[0][headers.index("ranges")] == r["plan"]
    owners = {b.owner for b in app.engine._builds.values() if b.id in ids}
    assert len(owners) == 8  # eight sessions, eight owners
