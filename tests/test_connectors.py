"""Every registered connector: shapes, gradients, teacher-head compatibility; the paper's init."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests._helpers import REPO
from tuner.core.catalog import CONNECTORS, connector_fits, list_connectors
from tuner.core.connectors import build_connector
from tuner.core.registry import Registry


def _teacher_head(c_t: int, k: int = 7) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_t, k))


@pytest.mark.parametrize("name", list_connectors())
def test_connector_maps_to_teacher_channels_and_backprops(name):
    c_s, c_t = (16, 16) if name == "identity" else (8, 24)
    r = build_connector(name, c_s, c_t)
    f_s = torch.randn(3, c_s, 4, 4, requires_grad=True)
    out = r(f_s)
    assert out.dim() == 4 and out.shape[:2] == (3, c_t)
    logits = _teacher_head(c_t)(out)
    assert logits.shape == (3, 7)
    logits.sum().backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    for p in r.parameters():
        assert p.grad is not None


def test_required_connectors_are_registered():
    assert {"conv1x1_bn_relu", "conv1x1_bn", "conv3x3_bn_relu", "bottleneck", "linear", "identity"} <= set(list_connectors())


def test_paper_connector_structure_and_init():
    torch.manual_seed(0)
    r = build_connector("conv1x1_bn_relu", 64, 256)
    conv, bn, relu = r
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / 256), rel=0.05)
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_linear_returns_one_by_one_map():
    out = build_connector("linear", 8, 12)(torch.randn(2, 8, 5, 5))
    assert out.shape == (2, 12, 1, 1)


def test_identity_needs_equal_channels():
    with pytest.raises(ValueError, match="identity.*equal channel counts.*16.*32"):
        build_connector("identity", 16, 32)
    assert not connector_fits("identity", 16, 32) and connector_fits("identity", 16, 16)
    assert connector_fits("conv1x1_bn", 16, 32)


def test_unknown_connector_lists_valid_names():
    with pytest.raises(KeyError) as e:
        build_connector("conv1x1_bnrelu", 4, 4)
    msg = str(e.value)
    assert 'did you mean "conv1x1_bn_relu"' in msg and "identity" in msg


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        CONNECTORS.register("linear", equal_channels=False)(lambda a, b: nn.Identity())
    with pytest.raises(ValueError, match="connector 'linear' is already provided"):
        CONNECTORS.provide("linear")(lambda a, b: nn.Identity())
    with pytest.raises(ValueError, match="connector 'conv5x5' is not declared"):
        CONNECTORS.provide("conv5x5")(lambda a, b: nn.Identity())


def test_every_connector_of_the_catalog_has_a_builder_that_joins_what_the_catalog_says():
    """Names and facts live in tuner/core/catalog.py; connectors.py provides only builders, for its names. A
    builder given unequal channel counts maps to the teacher's exactly when the catalog says it fits them."""
    assert CONNECTORS.provided() == CONNECTORS.names() == list_connectors()
    for name in list_connectors():
        out = CONNECTORS.get(name)(8, 24)(torch.randn(2, 8, 4, 4))
        assert (out.shape[1] == 24) == connector_fits(name, 8, 24), name


def test_a_declared_name_is_built_by_its_provider_on_first_use_and_names_are_read_without_it():
    """The catalog is read without torch; a declared name's builder imports its module when first asked for."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from tuner.core.catalog import CONNECTORS, connector_fits, list_connectors\n"
            "assert list_connectors()[-1] == 'identity' and not connector_fits('identity', 4, 8)\n"
            "assert 'torch' not in sys.modules and 'tuner.core.connectors' not in sys.modules\n"
            "print(type(CONNECTORS.get('linear')(4, 8)).__name__, 'tuner.core.connectors' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["_LinearConnector", "True"]


def test_a_users_connector_declares_and_provides_in_one_call_and_facts_are_checked():
    registry = Registry("connector", facts=("equal_channels",))
    registry.register("mine", equal_channels=False)(lambda a, b: nn.Identity())
    assert registry.names() == registry.provided() == ["mine"] and registry.meta("mine") == {"equal_channels": False}
    with pytest.raises(ValueError, match="'bare': facts equal_channels missing or unknown"):
        registry.register("bare")(lambda a, b: nn.Identity())
    registry.declare("ghost", equal_channels=True)
    with pytest.raises(RuntimeError, match="'ghost' declared but provided by no factory"):
        registry.check_provided()
    with pytest.raises(RuntimeError, match="connector 'ghost' is declared but no factory provides it"):
        registry.get("ghost")
