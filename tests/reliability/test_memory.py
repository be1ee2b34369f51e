"""Memory bounded by the engine's budget: 50 builds across 8 sessions on a small budget stay
under it, resident memory stays under a stated bound, and every evicted build rebuilds equal."""

from __future__ import annotations

import gc
import itertools

import torch

from laco_core.arch.sharing import model_bytes
from laco_core.arch.tiny import tiny_model, tiny_tokenizer
from laco_core.loading.limits import Limits
from laco_core.loading.models import load_model
from laco_core.runtime.budget import rss_bytes
from laco_core.runtime.engine import Engine
from laco_core.steps.collapse import CollapseStep

BUILDS, SESSIONS = 50, 8
METHODS = ("rdsc", "average", "official", "drop")  # the first two make new layer tensors
MiB = 2**20


def _plans(layers: int):
    """Distinct one- and two-range plans of an ``layers``-layer model."""
    singles = [[(lo, hi)] for lo in range(layers) for hi in range(lo + 1, min(lo + 4, layers))]
    doubles = [[a[0], b[0]] for a, b in itertools.combinations(singles, 2) if a[0][1] < b[0][0]]
    return singles + doubles


@torch.no_grad()
def _logits(model, ids):
    return model(input_ids=ids, use_cache=False).logits


def test_fifty_builds_across_eight_sessions_stay_in_budget(tmp_path, one_thread):
    # hidden 256: a layer is ~2.6 MB, so 50 builds would hold ~70 MB of new tensors
    path = tmp_path / "wide"
    tiny_model(
        "llama", layers=8, hidden_size=256, intermediate_size=512, head_dim=64
    ).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    base_bytes = model_bytes(load_model(str(path), "float32", "cpu").model)
    layer = base_bytes // 12  # rough: 8 layers + embeddings and head
    budget = base_bytes + 6 * layer  # room for a handful of merged layers only
    engine = Engine(memory_budget_gb=budget / 2**30, limits=Limits.current(False))
    base = engine.load(str(path), "float32", "cpu")
    ids = torch.randint(3, 250, (1, 24), generator=torch.Generator().manual_seed(0))
    gc.collect()
    rss0 = rss_bytes()

    plans = _plans(base.num_layers)
    made = []  # (owner, id, reference logits)
    peak_usage = 0
    for i in range(BUILDS):
        owner = f"session-{i % SESSIONS}"
        step = CollapseStep([list(r) for r in plans[i]], METHODS[i % len(METHODS)])
        did = engine.run(base, [step], owner)
        model, _ = engine.model(did, owner)
        made.append((owner, did, _logits(model, ids)))
        del model
        peak_usage = max(peak_usage, sum(engine.usage().values()))
    gc.collect()
    rss_growth = rss_bytes() - rss0

    evicted = sum(engine.build(did, owner).model is None for owner, did, _ in made)
    print(
        f"budget {engine.budget / MiB:.1f} MiB (base {base_bytes / MiB:.1f}), peak usage "
        f"{peak_usage / MiB:.1f} MiB, RSS growth {rss_growth / MiB:.1f} MiB, {evicted} evicted"
    )
    assert peak_usage <= engine.budget
    assert evicted >= BUILDS // 2  # the budget really was binding
    # stated bound: the budget's room above the base, plus 32 MiB for the allocator and the
    # 50 reference logits this test keeps (50 × 24 × 256 floats)
    assert rss_growth <= (engine.budget - base_bytes) + 32 * MiB, rss_growth / MiB
    for owner, did, want in made:  # each evicted build is rebuilt from its recipe, equal
        model, _ = engine.model(did, owner)
        assert torch.equal(_logits(model, ids), want), did
        del model
    assert sum(engine.usage().values()) <= engine.budget
    assert {len(engine.builds(f"session-{k}")) for k in range(SESSIONS)} <= {6, 7}
