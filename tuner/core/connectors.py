"""Connector registry: modules r mapping a student map (C_S channels) to the teacher's C_T channels.

Every connector's output is a ``B x C_T x H x W`` map (``linear`` returns ``1 x 1``), so the
teacher's head (global pooling + fc) can be applied to it (docs/method.md, "The connector"). Each name
and its fact (``equal_channels``: joins only equal channel counts) are declared in ``tuner.core.catalog``;
the functions here are their builders.
"""
from __future__ import annotations

from typing import List

from torch import Tensor, nn

from tuner.core.catalog import CONNECTORS, connector_fits
from tuner.core.models import he_init  # the paper's init, shared with the models

__all__ = ["build_connector"]  # names and facts (list_connectors, connector_fits): tuner.core.catalog


def build_connector(name: str, in_channels: int, out_channels: int) -> nn.Module:
    """Build connector ``name`` mapping ``in_channels`` (student) to ``out_channels`` (teacher).

    Raises:
        UnknownNameError: ``name`` is not registered.
        ValueError: the connector cannot join these channel counts (``connector_fits``).
    """
    build = CONNECTORS.get(name)
    if not connector_fits(name, in_channels, out_channels):
        raise ValueError(
            f"connector: {name!r} needs equal channel counts, got student {in_channels} and teacher {out_channels}; "
            "choose another connector"
        )
    return build(in_channels, out_channels)


def _conv_bn(c_in: int, c_out: int, k: int, relu: bool) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@CONNECTORS.provide("conv1x1_bn_relu")
def conv1x1_bn_relu(c_in: int, c_out: int) -> nn.Module:
    """The paper's connector: Conv1x1 (no bias) -> BN -> ReLU."""
    return he_init(_conv_bn(c_in, c_out, 1, relu=True))


@CONNECTORS.provide("conv1x1_bn")
def conv1x1_bn(c_in: int, c_out: int) -> nn.Module:
    """Conv1x1 -> BN without the ReLU: lets the connected map go negative."""
    return he_init(_conv_bn(c_in, c_out, 1, relu=False))


@CONNECTORS.provide("conv3x3_bn_relu")
def conv3x3_bn_relu(c_in: int, c_out: int) -> nn.Module:
    """Conv3x3 (padding 1) -> BN -> ReLU: adds spatial context."""
    return he_init(_conv_bn(c_in, c_out, 3, relu=True))


@CONNECTORS.provide("bottleneck")
def bottleneck(c_in: int, c_out: int) -> nn.Module:
    """Two-layer bottleneck: 1x1 down to min(C_S, C_T) // 2 -> 3x3 -> 1x1 up, each with BN, ReLU after all."""
    mid = max(min(c_in, c_out) // 2, 1)
    return he_init(
        nn.Sequential(_conv_bn(c_in, mid, 1, relu=True), _conv_bn(mid, mid, 3, relu=True), _conv_bn(mid, c_out, 1, relu=True))
    )


class _LinearConnector(nn.Module):
    """A linear layer on the pooled student vector, returned as a ``B x C_T x 1 x 1`` map."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, c_out)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(f.mean(dim=(2, 3)))[:, :, None, None]


@CONNECTORS.provide("linear")
def linear(c_in: int, c_out: int) -> nn.Module:
    return _LinearConnector(c_in, c_out)


@CONNECTORS.provide("identity")
def identity(c_in: int, c_out: int) -> nn.Module:
    """No connector at all: only valid when the student already has the teacher's channel count."""
    return nn.Identity()


CONNECTORS.check_provided()  # every connector the catalog declares has its builder here
