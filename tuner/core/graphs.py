"""The frozen teacher's no-grad forward replayed from CUDA graphs: one launch instead of ~150 per batch.

On a GPU a batch-64 SRRL step is bound by kernel launches, not by the GPU (an H100 was busy 3.1 ms of
a 9.8 ms step; the resnet32x4 teacher's forward alone is ~150 launches). The teacher is frozen, in
eval mode and fed fixed shapes, so its forward can be captured once per input shape and replayed.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["GraphedTeacher"]

log = logging.getLogger(__name__)

_Entry = Tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]  # graph, static input, features, logits


class GraphedTeacher:
    """``(features, logits)`` of ``teacher`` under no_grad, from a CUDA graph per input shape (eager on CPU).

    The outputs are the graph's static buffers: valid until the next call, which is all a training
    step needs (they are read by the loss and its backward before the next batch). At most
    ``max_graphs`` shapes are captured (a loader's full batch and its last, shorter one); other
    shapes, and any capture that fails, run eagerly.

    A graph holds the addresses of the teacher's weights: when they move, the graphs are captured anew.

    Args:
        teacher: a frozen ``DistillableModel`` in eval mode (``forward_features``, ``head``).
        max_graphs: input shapes captured at most.
    """

    def __init__(self, teacher: nn.Module, max_graphs: int = 2) -> None:
        self.teacher = teacher
        self.max_graphs = max_graphs
        self._graphs: Dict[Tuple, _Entry] = {}
        self._weights = 0  # data_ptr of the teacher's first parameter when the graphs were captured
        self._failed = False

    def eager(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        with torch.no_grad():
            f_t = self.teacher.forward_features(x)
            return f_t, self.teacher.head(f_t)

    def __call__(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if not x.is_cuda or self._failed:
            return self.eager(x)
        weights = next(self.teacher.parameters()).data_ptr()
        if weights != self._weights:  # the teacher moved (.to, .half, ...): graphs point at freed memory
            self._graphs.clear()
            self._weights = weights
        autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        key = (tuple(x.shape), x.stride(), x.dtype, x.device, autocast)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self.eager(x)
            entry = self._capture(x, key)
            if entry is None:
                return self.eager(x)
        graph, static_x, f_t, z_t = entry
        static_x.copy_(x)
        graph.replay()
        return f_t, z_t

    def _capture(self, x: Tensor, key: Tuple) -> Optional[_Entry]:
        # Autocast's cast cache off while capturing, as PyTorch's CUDA-graph notes ask (a cast cached
        # during capture would outlive it); warm-up on a side stream lets cuDNN autotune first.
        def autocast() -> contextlib.AbstractContextManager:
            return torch.autocast("cuda", dtype=key[-1], cache_enabled=False) if key[-1] else contextlib.nullcontext()

        try:
            static_x = torch.empty_like(x).copy_(x)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), autocast():
                for _ in range(3):
                    self.eager(static_x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: Ray's own threads in a trial's process may touch CUDA while this captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"), autocast():
                f_t, z_t = self.eager(static_x)
        except Exception as e:  # noqa: BLE001 - a model that cannot be captured still trains, eagerly
            log.warning("teacher forward runs eagerly: CUDA graph capture failed (%s)", str(e).splitlines()[0])
            self._failed = True
            self._graphs.clear()
            return None
        self._graphs[key] = entry = (graph, static_x, f_t, z_t)
        return entry
