"""The Distiller: loss composition, frozen teacher, gradient paths, CE-only mode."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuner.core.connectors import build_connector
from tuner.core.distiller import LOSS_TERMS, Distiller
from tuner.core.losses import feature_matching_loss, kd_loss, softmax_regression_loss
from tuner.core.models import build_model


def _pair(alpha=1.0, beta=1.0, gamma=0.0, connector="conv1x1_bn_relu"):
    torch.manual_seed(0)
    teacher = build_model("digits_cnn4x64", 10, in_channels=1)
    student = build_model("digits_cnn2x4", 10, in_channels=1)
    r = build_connector(connector, student.feature_channels, teacher.feature_channels)
    return Distiller(teacher, student, r, alpha, beta, gamma), torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))


def test_terms_have_fixed_keys_and_total_is_the_weighted_sum():
    d, x, y = _pair(alpha=0.7, beta=2.5, gamma=0.3)
    logits, terms = d(x, y)
    assert tuple(terms) == LOSS_TERMS and logits.shape == (6, 10)
    expected = terms["ce"] + 0.7 * terms["fm"] + 2.5 * terms["sr"] + 0.3 * terms["kd"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(terms[k].item() > 0 for k in LOSS_TERMS)


def test_terms_match_the_loss_functions_applied_by_hand():
    d, x, y = _pair(gamma=1.0)
    d.train()
    _, terms = d(x, y)
    with torch.no_grad():
        f_s = d.student.forward_features(x)
        z_s = d.student.head(f_s)
        f_t = d.teacher.forward_features(x)
        z_t = d.teacher.head(f_t)
        r_s = d.connector(f_s)
        assert terms["ce"].item() == pytest.approx(F.cross_entropy(z_s, y).item(), rel=1e-5)
        assert terms["fm"].item() == pytest.approx(feature_matching_loss(r_s, f_t).item(), rel=1e-5)
        assert terms["sr"].item() == pytest.approx(softmax_regression_loss(r_s, d.teacher.head, z_t).item(), rel=1e-5)
        assert terms["kd"].item() == pytest.approx(kd_loss(z_s, z_t, 4.0).item(), rel=1e-5)


def test_teacher_is_frozen_by_construction():
    d, x, y = _pair()
    d.train()
    assert not d.teacher.training and d.student.training
    assert all(not p.requires_grad for p in d.teacher.parameters())
    teacher_ids = {id(p) for p in d.teacher.parameters()}
    learnable = list(d.learnable_parameters())
    assert not teacher_ids & {id(p) for p in learnable}
    assert {id(p) for p in learnable} == {id(p) for p in d.student.parameters()} | {id(p) for p in d.connector.parameters()}
    running = [b.clone() for b in d.teacher.buffers()]
    d(x, y)[1]["total"].backward()
    assert all(p.grad is None for p in d.teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(running, d.teacher.buffers()))  # BN stats untouched


def test_sr_gradient_flows_through_teacher_head_into_connector_and_student():
    d, x, y = _pair(alpha=0.0, beta=1.0)
    _, terms = d(x, y)
    terms["sr"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.connector.parameters())
    assert d.student.forward_features is not None
    student_grads = [p.grad for p in d.student.parameters() if p.grad is not None]
    assert student_grads and sum(g.abs().sum() for g in student_grads) > 0
    assert all(p.grad is None for p in d.teacher.parameters())


def test_ce_only_skips_the_teacher():
    torch.manual_seed(0)
    student = build_model("digits_cnn2x4", 10, in_channels=1)
    d = Distiller(None, student, None, 0.0, 0.0, 0.0)
    _, terms = d(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    assert terms["total"] is terms["ce"] and terms["fm"].item() == terms["sr"].item() == terms["kd"].item() == 0.0

    class Exploding(torch.nn.Module):  # a teacher that must never run
        feature_channels = 64

        def forward_features(self, x):
            raise AssertionError("teacher ran")

    Distiller(Exploding(), student, None, 0.0, 0.0, 0.0)(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))


def test_missing_teacher_or_connector_is_an_error():
    student = build_model("digits_cnn2x4", 10, in_channels=1)
    with pytest.raises(ValueError, match="teacher"):
        Distiller(None, student, None, 1.0, 0.0)
    with pytest.raises(ValueError, match="connector"):
        Distiller(build_model("digits_cnn4x64", 10, in_channels=1), student, None, 0.0, 1.0)


def test_larger_student_map_is_pooled_to_teacher_size():
    torch.manual_seed(0)
    teacher = build_model("vgg8", 10)  # 4x4 map
    student = build_model("resnet20", 10)  # 8x8 map
    r = build_connector("conv3x3_bn_relu", student.feature_channels, teacher.feature_channels)
    _, terms = Distiller(teacher, student, r, 1.0, 1.0)(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    assert torch.isfinite(terms["total"])


def test_graphed_teacher_is_eager_on_cpu():
    from tuner.core.graphs import GraphedTeacher

    teacher = build_model("digits_cnn4x64", 10, in_channels=1).eval().requires_grad_(False)
    x = torch.randn(4, 1, 8, 8)
    graphed = GraphedTeacher(teacher)
    f_t, z_t = graphed(x)
    assert torch.equal(z_t, teacher(x)) and not f_t.requires_grad and graphed._graphs == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bf16", [False, True])
def test_graphed_teacher_replays_what_eager_computes(bf16):
    """One graph per input shape (at most 2), each replay on the new batch; a third shape runs eagerly."""
    import contextlib

    from tuner.core.graphs import GraphedTeacher

    torch.manual_seed(0)
    teacher = build_model("resnet8x4", 100).cuda().to(memory_format=torch.channels_last).eval().requires_grad_(False)
    graphed = GraphedTeacher(teacher)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    tol = dict(atol=5e-2, rtol=5e-2) if bf16 else dict(atol=1e-4, rtol=1e-4)
    batches = [torch.randn(n, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
               for n in (16, 16, 8, 4)]
    for x, graphs in zip(batches, (1, 1, 2, 2)):
        with ctx():
            f_t, z_t = graphed(x)
            f_e, z_e = graphed.eager(x)
        assert f_t.shape == f_e.shape and z_t.shape == (len(x), 100)
        assert torch.allclose(f_t.float(), f_e.float(), **tol) and torch.allclose(z_t.float(), z_e.float(), **tol)
        assert len(graphed._graphs) == graphs
    assert not graphed._failed
    with ctx():
        teacher.to(memory_format=torch.contiguous_format).float()  # new weight storage: the graphs are stale
        x = batches[0]
        f_t, z_t = graphed(x)
        f_e, z_e = graphed.eager(x)
    assert torch.allclose(z_t.float(), z_e.float(), **tol) and len(graphed._graphs) == 1  # captured anew
