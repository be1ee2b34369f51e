"""The ridge least-squares map of ``drop_linear`` (ReplaceMe) and its fold into down_proj."""

from __future__ import annotations

import json

import pytest
import torch

from laco_core.arch.adapters import ADAPTERS
from laco_core.errors import LacoError
from laco_core.methods.fitting import fit_info, solve
from laco_core.methods.linear import fold_into_down
from laco_core.registry import REGISTRY


def _normal(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_solve_recovers_an_exact_map_and_tends_to_identity():
    m = _normal(400, 16)  # (N, H)
    t0 = _normal(16, 16, seed=1)
    r = m @ t0
    torch.testing.assert_close(solve(m.T @ m, m.T @ r, 0.0), t0)
    far = solve(m.T @ m, m.T @ r, 1e9)  # an infinite ridge keeps the plain drop
    torch.testing.assert_close(far, torch.eye(16, dtype=far.dtype), atol=1e-6, rtol=0)


def test_ridge_solution_never_fits_worse_than_drop():
    m, r = _normal(200, 8), _normal(200, 8, seed=2)
    for ridge in (0.0, 1e-3, 1e-1, 10.0):
        t = solve(m.T @ m, m.T @ r, ridge)
        assert (m @ t - r).square().sum() <= (m - r).square().sum() + 1e-9


def test_fold_into_down_rows_equals_map_after_the_mlp():
    down = _normal(8, 20).float()  # (H, I)
    t = _normal(8, 8, seed=3).float()
    a = _normal(5, 20, seed=4).float()  # (N, I) inner activations
    torch.testing.assert_close(a @ fold_into_down(down, t).T, (a @ down.T) @ t)


def test_fit_description_is_json_and_names_the_tensor():
    info = fit_info(torch.eye(4), ridge=0.1, tokens=7)
    text = json.dumps({"fit": info})
    assert "sha1" in text and len(text) < 200
    assert fit_info(torch.eye(4))["sha1"] == info["sha1"] != fit_info(2 * torch.eye(4))["sha1"]


def test_drop_linear_needs_a_fit():
    method = REGISTRY.methods["drop_linear"]
    layer = {"mlp.down_proj.weight": torch.ones(2, 3)}
    with pytest.raises(LacoError, match="never fitted"):
        method.merge([layer, layer], ADAPTERS["llama"])
    with pytest.raises(LacoError, match="lost its fitted tensor"):
        method.merge([layer, layer], ADAPTERS["llama"], fit={"ridge": 0.1, "sha1": "x"})
    same = method.merge([layer, layer], ADAPTERS["llama"], fit={"skipped": "norm"})
    assert same["mlp.down_proj.weight"] is layer["mlp.down_proj.weight"]
    assert not method.is_fitted({"fit": {"ridge": 0.1}}) and method.is_fitted(
        {"fit": {"skipped": "x"}}
    )


def test_moments_error_matches_the_residual_and_ridge_is_cross_validated():
    from laco_core.methods.fitting import Moments, choose_ridge

    m, t0 = _normal(600, 8), _normal(8, 8, seed=5)
    acc = Moments()
    acc.add(m, m @ t0)
    t = _normal(8, 8, seed=6)
    # float32 products per chunk, float64 sums: relative precision ~1e-7
    assert acc.error(t) == pytest.approx(float((m @ t - m @ t0).square().sum()), rel=1e-6)
    a, b = Moments(), Moments()
    a.add(m[:300], m[:300] @ t0)
    b.add(m[300:], m[300:] @ t0 + 0.01 * _normal(300, 8, seed=7))
    assert choose_ridge(a, b) == 1e-3  # a real map: the least shrinkage wins
    a, b = Moments(), Moments()
    a.add(m[:20], m[:20] + _normal(20, 8, seed=8))  # drop (T = I) plus pure noise
    b.add(m[20:40], m[20:40] + _normal(20, 8, seed=9))
    ridge = choose_ridge(a, b)
    assert ridge is None or ridge >= 10.0  # nothing to learn: stay at (or near) the drop


def test_solve_with_a_prior_shrinks_towards_it():
    a = _normal(300, 24)  # (N, I) inner activations
    w0 = _normal(24, 8, seed=10)  # the layer's own W_downᵀ (I, H)
    r = a @ _normal(24, 8, seed=11)
    far = solve(a.T @ a, a.T @ r, 1e9, w0)
    torch.testing.assert_close(far, w0, atol=1e-6, rtol=0)
    near = solve(a.T @ a, a.T @ r, 0.0, w0)
    assert (a @ near - r).square().sum() < 1e-12 * r.square().sum()


def test_drop_lsq_replaces_down_proj_and_checks_its_shape():
    method = REGISTRY.methods["drop_lsq"]
    layer = {"mlp.down_proj.weight": torch.ones(2, 3), "mlp.up_proj.weight": torch.ones(3, 2)}
    new = torch.full((2, 3), 0.5)
    out = method.merge([layer, layer], ADAPTERS["llama"], down_weight=new, fit=fit_info(new))
    assert torch.equal(out["mlp.down_proj.weight"], new)
    assert out["mlp.up_proj.weight"] is layer["mlp.up_proj.weight"]
    wrong = torch.ones(3, 3)
    with pytest.raises(LacoError, match="another model"):
        method.merge([layer, layer], ADAPTERS["llama"], down_weight=wrong, fit=fit_info(wrong))
    with pytest.raises(LacoError, match="lost its fitted tensor"):
        method.merge([layer, layer], ADAPTERS["llama"], fit={"ridge": 0.1, "sha1": "x"})


def test_through_norm_gives_the_closest_output_an_rms_norm_can_give():
    from laco_core.methods.fitting import through_norm

    torch.manual_seed(0)
    gain = torch.cat([torch.rand(15, dtype=torch.float64) * 3, torch.zeros(1, dtype=torch.float64)])
    want = torch.randn(2, 5, 16, dtype=torch.float64) * 4
    m = torch.randn(2, 5, 16, dtype=torch.float64)
    best, weight = through_norm(want, m, gain)  # g ⊙ n with rms(n) = 1
    n = torch.where(gain == 0, torch.zeros_like(best), best / gain.clamp_min(1e-12))
    rms = n.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-6, rtol=0)
    torch.testing.assert_close(weight, 1 / m.pow(2).mean(-1, keepdim=True).sqrt())
    # no other unit-rms direction does better: the naive one (want / g, normalised) nor random ones
    err = (best - want).pow(2).sum(-1)
    for _ in range(50):
        other = torch.randn_like(n) + n * 3
        other = other / other.pow(2).mean(-1, keepdim=True).sqrt()
        assert ((gain * other - want).pow(2).sum(-1) >= err - 1e-9).all()
