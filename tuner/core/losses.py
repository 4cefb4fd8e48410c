"""The SRRL loss terms as pure functions of tensors (docs/method.md, "The three losses")."""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

__all__ = ["feature_matching_loss", "softmax_regression_loss", "kd_loss", "pool_vector"]


def pool_vector(f: Tensor) -> Tensor:
    """Global average pooling of a map ``B x C x H x W`` (or pass-through of ``B x C``) to ``B x C``."""
    return f if f.dim() == 2 else f.mean(dim=(2, 3))


def feature_matching_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """L_FM = mean over batch and channels of (GAP(r(F_S)) - GAP(F_T))^2; the teacher side is detached.

    Args:
        f_s: connected student map ``B x C_T x H x W`` (or pooled ``B x C_T``).
        f_t: teacher map ``B x C_T x H' x W'`` (or pooled ``B x C_T``).
    """
    return F.mse_loss(pool_vector(f_s), pool_vector(f_t).detach())


def softmax_regression_loss(f_s: Tensor, teacher_head: Callable[[Tensor], Tensor], z_t: Tensor) -> Tensor:
    """L_SR = mean over batch and classes of (C_T(r(F_S)) - z_T)^2: raw logits, no softmax, no temperature.

    The teacher's head is frozen (its weights have requires_grad=False) but gradients flow THROUGH
    it into the connector and the student, so it must not be called under no_grad here.

    Args:
        f_s: connected student map ``B x C_T x H x W``.
        teacher_head: the teacher's classifier (global pooling + fc), ``B x C_T x H x W -> B x K``.
        z_t: teacher logits ``B x K``.
    """
    return F.mse_loss(teacher_head(f_s), z_t.detach())


def kd_loss(z_s: Tensor, z_t: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton KD: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), batch mean (optional 4th term)."""
    log_p_s = F.log_softmax(z_s / temperature, dim=1)
    log_p_t = F.log_softmax(z_t.detach() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
