"""The load pipeline's steps one by one: what ``resolve`` makes of each kind of spec, what
``check`` refuses before any weights, and a pruned folder read through its shapes sidecar."""

from __future__ import annotations

import pytest
import torch

from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.errors import LacoError
from laco_core.loading.models import check, load_model, resolve
from laco_core.prune.io import load_pruned, save_pruned


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("specs")
    tiny_model("qwen3", layers=3).save_pretrained(root / "plain")
    tiny_tokenizer().save_pretrained(root / "plain")
    save_pruned(tiny_model("gemma2", layers=3), tiny_tokenizer(), root / "pruned")
    (root / "x.gguf").write_bytes(b"GGUF")
    return root


def test_resolve_names_each_kind_and_where_it_is(folders):
    for spec, kind, where in (
        (str(folders / "plain"), "folder", str(folders / "plain")),
        (str(folders / "pruned"), "pruned", str(folders / "pruned")),
        (str(folders / "x.gguf"), "gguf", str(folders / "x.gguf")),
        ("  acme/some-model ", "hub", "acme/some-model"),
    ):
        source = resolve(spec)
        assert (source.kind, source.where, source.embedded) == (kind, where, None), spec
    default = resolve(None)
    assert default.spec == "default" and default.embedded.spec == "default"


def test_a_hosted_resolve_never_looks_at_the_disk(folders):
    for spec in (str(folders / "plain"), str(folders / "x.gguf"), "/etc/passwd"):
        source = resolve(spec, hosted=True)
        assert (source.kind, source.where, source.hosted) == ("hub", spec, True)
        with pytest.raises(LacoError, match="is not a Hub model id"):
            check(source)


def test_check_refuses_an_over_limit_model_before_its_weights(folders):
    config = check(resolve(str(folders / "plain")))
    assert config.model_type == "qwen3"
    with pytest.raises(LacoError, match=r"over the limit of 0\.0 B"):
        check(resolve(str(folders / "plain")), max_params=1000)


def test_a_pruned_folder_loads_like_load_pruned(folders):
    lm = load_model(str(folders / "pruned"), "float32", "cpu")
    back, _ = load_pruned(folders / "pruned")
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, back(ids).logits, rtol=0, atol=0)
    assert lm.source == str(folders / "pruned") and not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
