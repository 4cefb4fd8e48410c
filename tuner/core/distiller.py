"""SRRL distillation as one module: frozen teacher + student + connector -> logits and loss terms."""
from __future__ import annotations

import itertools
from typing import Dict, Iterator, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from tuner.core.config import uses_teacher
from tuner.core.graphs import GraphedTeacher
from tuner.core.losses import feature_matching_loss, kd_loss, softmax_regression_loss

__all__ = ["Distiller", "Learner", "LOSS_TERMS"]

#: the fixed keys of the terms dict returned by ``Distiller.forward``
LOSS_TERMS = ("ce", "fm", "sr", "kd", "total")


class Distiller(nn.Module):
    """``total = ce + alpha * fm + beta * sr + gamma * kd`` (docs/method.md, "The three losses").

    The teacher is frozen by construction: its parameters have ``requires_grad=False``, it stays in
    eval mode under ``.train()``, and ``learnable_parameters()`` (student + connector) is all an
    optimizer ever sees. With ``alpha = beta = gamma = 0`` it is a plain student trained with CE
    alone, and the teacher (which may then be ``None``) is never run.

    Args:
        teacher: a ``DistillableModel`` (``forward_features``, ``head``), or None for CE only.
        student: a ``DistillableModel``.
        connector: maps the student map ``B x C_S x H x W`` to ``B x C_T x H' x W'``; None for CE only.
        alpha: weight of feature matching. beta: weight of softmax regression.
        gamma: weight of the optional Hinton KD term (off by default). temperature: KD temperature.
    """

    def __init__(
        self,
        teacher: Optional[nn.Module],
        student: nn.Module,
        connector: Optional[nn.Module],
        alpha: float,
        beta: float,
        gamma: float = 0.0,
        temperature: float = 4.0,
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.gamma, self.temperature = float(alpha), float(beta), float(gamma), float(temperature)
        if self.uses_teacher and teacher is None:
            raise ValueError("teacher: a Distiller with alpha, beta or gamma > 0 needs a teacher")
        if (self.alpha > 0 or self.beta > 0) and connector is None:
            raise ValueError("connector: feature matching and softmax regression need a connector")
        self.student = student
        self.connector = connector if connector is not None else nn.Identity()
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        # a plain attribute, not a submodule: the teacher's weights are registered once, above
        self._teacher_forward = GraphedTeacher(teacher) if teacher is not None else None

    @property
    def uses_teacher(self) -> bool:
        return uses_teacher(self.alpha, self.beta, self.gamma)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BN statistics of the teacher never move
        return self

    def learnable_parameters(self) -> Iterator[nn.Parameter]:
        """Student + connector parameters: the only ones an optimizer may update."""
        return itertools.chain(self.student.parameters(), self.connector.parameters())

    def learnable_state_dict(self) -> Dict[str, Dict[str, Tensor]]:
        """Weights of student and connector (what a checkpoint needs; the teacher is cached apart)."""
        return {"student": self.student.state_dict(), "connector": self.connector.state_dict()}

    def load_learnable_state_dict(self, state: Dict[str, Dict[str, Tensor]]) -> None:
        self.student.load_state_dict(state["student"])
        self.connector.load_state_dict(state["connector"])

    def forward(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Student logits ``B x K`` and the loss terms dict with keys ``LOSS_TERMS`` (scalars).

        Args:
            x: images ``B x C x H x W``. y: labels ``B`` (int64).
        """
        return self.student_terms(x, y, self.teacher_outputs(x))

    def teacher_outputs(self, x: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        """The teacher's penultimate map ``B x C_T x H x W`` and logits ``B x K``; None when no term uses them.

        Once per batch, no autograd graph (inference_mode cannot be used: SR backpropagates through the
        teacher's head); replayed from a CUDA graph on a GPU. Run before the student so its temporaries are
        freed before the student's graph holds memory: on CPU this avoids ~57k page faults per batch-64
        resnet32x4 step (bench/distill_cost on 2 CPUs: ratio 1.09 -> 0.96).
        """
        return self._teacher_forward(x) if self.uses_teacher else None

    def student_terms(self, x: Tensor, y: Tensor, teacher_out: Optional[Tuple[Tensor, Tensor]]
                      ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """``forward`` given the teacher's outputs: everything that has gradients (what DDP wraps)."""
        f_s = self.student.forward_features(x)
        z_s = self.student.head(f_s)
        ce = F.cross_entropy(z_s, y)
        zero = ce.new_zeros(())
        if teacher_out is None:
            return z_s, {"ce": ce, "fm": zero, "sr": zero, "kd": zero, "total": ce}
        f_t, z_t = teacher_out
        fm = sr = zero
        if self.alpha > 0 or self.beta > 0:
            if f_s.shape[-2:] != f_t.shape[-2:] and f_s.shape[-1] > f_t.shape[-1]:
                # docs/method.md: a student map larger than the teacher's is pooled to the teacher's size
                f_s = F.adaptive_avg_pool2d(f_s, f_t.shape[-2:])
            r_s = self.connector(f_s)
            fm = feature_matching_loss(r_s, f_t)
            sr = softmax_regression_loss(r_s, self.teacher.head, z_t)
        kd = kd_loss(z_s, z_t, self.temperature) if self.gamma > 0 else zero
        total = ce + self.alpha * fm + self.beta * sr + self.gamma * kd
        return z_s, {"ce": ce, "fm": fm, "sr": sr, "kd": kd, "total": total}


class Learner(nn.Module):
    """A Distiller's student + connector as one module whose forward is ``Distiller.student_terms``: what DDP
    wraps, so their gradients and BatchNorm buffers are synchronised and the frozen teacher is never wrapped."""

    def __init__(self, distiller: Distiller) -> None:
        super().__init__()
        self.student, self.connector = distiller.student, distiller.connector
        self._distiller = (distiller,)  # a tuple, not a submodule: DDP must not see the teacher

    def forward(self, x: Tensor, y: Tensor, teacher_out: Optional[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Dict[str, Tensor]]:
        return self._distiller[0].student_terms(x, y, teacher_out)
