"""Golden values and properties of the SRRL loss terms (docs/method.md, "The three losses")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tuner.core.losses import feature_matching_loss, kd_loss, softmax_regression_loss

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "golden_losses.json").read_text())


@pytest.fixture
def tensors(one_thread):
    torch.manual_seed(GOLDEN["seed"])
    return {name: torch.randn(*GOLDEN["shapes"][name]) for name in GOLDEN["draw_order"]}


def _head(w: torch.Tensor, b: torch.Tensor) -> nn.Module:
    fc = nn.Linear(w.shape[1], w.shape[0])
    fc.weight.data.copy_(w)
    fc.bias.data.copy_(b)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


def test_golden_feature_matching(tensors):
    got = feature_matching_loss(tensors["f_s"], tensors["f_t"]).item()
    assert got == pytest.approx(GOLDEN["feature_matching"], rel=1e-5)


def test_golden_softmax_regression(tensors):
    head = _head(tensors["W"], tensors["b"])
    got = softmax_regression_loss(tensors["f_s"], head, tensors["z_t"]).item()
    assert got == pytest.approx(GOLDEN["softmax_regression"], rel=1e-5)


def test_golden_kd(tensors):
    got = kd_loss(tensors["z_s"], tensors["z_t"], GOLDEN["temperature"]).item()
    assert got == pytest.approx(GOLDEN["kd"], rel=1e-5)


def test_fm_zero_when_pooled_maps_equal():
    f_t = torch.randn(3, 4, 2, 2)
    # a different 4x4 map whose average pool equals the teacher's
    f_s = f_t.mean((2, 3), keepdim=True).expand(3, 4, 4, 4) + torch.tensor([1.0, -1.0]).repeat(2).view(1, 1, 1, 4)
    assert not torch.equal(f_s[..., :2, :2], f_t)
    assert feature_matching_loss(f_s, f_t).item() == pytest.approx(0.0, abs=1e-12)


def test_sr_zero_when_head_reproduces_teacher_logits():
    head = _head(torch.randn(5, 6), torch.randn(5))
    f = torch.randn(2, 6, 3, 3)
    z_t = head(f).detach()
    assert softmax_regression_loss(f, head, z_t).item() == pytest.approx(0.0, abs=1e-12)


def test_sr_uses_raw_logits_not_softmax():
    """A constant shift of the teacher logits leaves the softmax unchanged but must change SR."""
    head = _head(torch.randn(5, 6), torch.randn(5))
    f = torch.randn(2, 6, 3, 3)
    z_t = head(f).detach()
    assert softmax_regression_loss(f, head, z_t + 1.0).item() == pytest.approx(1.0, rel=1e-5)


def test_teacher_side_is_detached():
    f_s = torch.randn(2, 4, 2, 2, requires_grad=True)
    f_t = torch.randn(2, 4, 2, 2, requires_grad=True)
    z_s = torch.randn(2, 3, requires_grad=True)
    z_t = torch.randn(2, 3, requires_grad=True)
    (feature_matching_loss(f_s, f_t) + kd_loss(z_s, z_t)).backward()
    assert f_t.grad is None and z_t.grad is None
    assert f_s.grad is not None and z_s.grad is not None


def test_kd_zero_for_equal_logits_and_scales_with_t_squared():
    z = torch.randn(4, 7)
    assert kd_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    z_t = torch.randn(4, 7)
    # for large T, T^2 * KL -> (1 / 2K) * mean-centred squared logit gap: finite, not vanishing
    assert 0 < kd_loss(z, z_t, 100.0).item() < 10
