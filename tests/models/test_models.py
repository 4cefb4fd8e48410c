"""The model registry: every registered model gets the interface tests; the CIFAR zoo is checked
against docs/method.md's table; weight loading, errors and the MACs counter."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tuner.core.catalog import MODELS, feature_channels, list_models, model_info
from tuner.core.models import DistillableModel, build_model, count_macs, count_params, load_weights
from tuner.core.registry import UnknownNameError

# docs/method.md, "CIFAR-100 model zoo": name -> (C of the pre-pool map, map side at 32x32, params in M for 100 classes)
ZOO = {
    "resnet20": (64, 8, 0.28),
    "resnet32": (64, 8, 0.47),
    "resnet56": (64, 8, 0.86),
    "resnet110": (64, 8, 1.74),
    "resnet8x4": (256, 8, 1.23),
    "resnet32x4": (256, 8, 7.43),
    "wrn_16_1": (64, 8, 0.18),
    "wrn_40_1": (64, 8, 0.57),
    "wrn_16_2": (128, 8, 0.70),
    "wrn_40_2": (128, 8, 2.26),
    "vgg8": (512, 4, 3.97),
    "vgg13": (512, 4, 9.46),
    "ShuffleNetV1": (960, 4, 0.95),
    "ShuffleNetV2": (1024, 4, 1.36),
    "MobileNetV2": (1280, 2, 0.81),
    "ResNet50": (2048, 4, 23.71),
}
NATIVE_SIZE = {"cifar": 32, "digits": 8, "imagenet": 224}
TEST_SIZE = {"cifar": 32, "digits": 8, "imagenet": 64}  # imagenet models accept 64 px: keeps the suite fast
IMAGENET_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny batches: one thread is faster, and immune to a busy machine's thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _input(name: str, batch: int = 2, in_channels: int | None = None) -> torch.Tensor:
    info = model_info(name)
    size = TEST_SIZE[info["family"]]
    return torch.randn(batch, in_channels or info["in_channels"], size, size)


@pytest.mark.parametrize("name", list_models())
def test_interface_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    assert isinstance(model, DistillableModel)
    assert model.num_classes == 7
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == model.feature_channels
    x = _input(name)
    f = model.forward_features(x)
    assert f.ndim == 4 and f.shape[:2] == (2, model.feature_channels)
    assert f.min().item() >= 0, "the map must be taken after the final ReLU"
    logits = model.head(f)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(model(x), logits)
    F.cross_entropy(logits, torch.tensor([0, 6])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    for h, w in [(1, 1), (3, 5)]:  # the head takes maps of any spatial size
        assert model.head(torch.rand(2, model.feature_channels, h, w)).shape == (2, 7)


@pytest.mark.parametrize("name", list_models())
def test_metadata_and_in_channels(name: str) -> None:
    info = model_info(name)
    assert info["input_size"] == NATIVE_SIZE[info["family"]]
    assert name in list_models(input_size=info["input_size"])
    model = build_model(name, num_classes=3, in_channels=2).eval()
    with torch.no_grad():
        assert model(_input(name, in_channels=2)).shape == (2, 3)
    # the catalog's feature_channels is what the built model has, for any class count and channels
    assert feature_channels(name) == info["feature_channels"] == model.feature_channels
    assert build_model(name, num_classes=100).feature_channels == feature_channels(name)


@pytest.mark.parametrize("name", list(ZOO))
def test_cifar_zoo_matches_srrl_table(name: str) -> None:
    channels, side, params_m = ZOO[name]
    assert model_info(name)["family"] == "cifar"
    model = build_model(name, num_classes=100).eval()
    assert count_params(model) == pytest.approx(params_m * 1e6, rel=0.02)
    assert model.feature_channels == channels
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, channels, side, side)


def test_list_models_filters_by_input_size() -> None:
    assert set(list_models(32)) == set(ZOO)
    assert set(list_models(224)) == set(IMAGENET_CHANNELS)
    assert {"digits_cnn4x64", "digits_cnn2x4", "digits_cnn2x8", "digits_cnn1x8"} <= set(list_models(8))
    assert list_models(5) == []
    assert list_models() == list_models(32) + list_models(8) + list_models(224)


@pytest.mark.parametrize("name", list_models(8))
def test_digits_models_keep_8x8(name: str) -> None:
    model = build_model(name, num_classes=10).eval()
    width = int(name.rsplit("x", 1)[1])
    assert next(model.parameters()).shape[1] == 1  # one input channel by default
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 1, 8, 8)).shape == (1, width, 8, 8)


def test_imagenet_maps_at_224() -> None:
    for name, channels in IMAGENET_CHANNELS.items():
        model = build_model(name, num_classes=1000).eval()
        with torch.no_grad():
            assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, channels, 7, 7)


def test_every_model_of_the_catalog_has_a_builder_and_every_builder_a_name_of_the_catalog() -> None:
    """Names and facts live in tuner/core/catalog.py; the model files provide only builders, for its names."""
    assert MODELS.provided() == MODELS.names() == list_models()
    with pytest.raises(ValueError, match="model 'resnet9' is not declared"):
        MODELS.provide("resnet9")(lambda num_classes, in_channels: None)
    with pytest.raises(ValueError, match="model 'resnet20' is already provided"):
        MODELS.provide("resnet20")(lambda num_classes, in_channels: None)
    with pytest.raises(ValueError, match="model 'resnet20' is already registered"):
        MODELS.register("resnet20", **model_info("resnet20"))(lambda num_classes, in_channels: None)


@pytest.fixture
def own_models(monkeypatch):
    """MODELS as it is, restored after the test: a test's own models leave no trace."""
    monkeypatch.setattr(MODELS, "_meta", dict(MODELS._meta))
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    return MODELS


def test_a_users_model_declares_its_facts_and_provides_its_builder_in_one_call(own_models) -> None:
    @own_models.register("my_cnn", input_size=8, family="digits", in_channels=1, feature_channels=8)
    def my_cnn(num_classes: int, in_channels: int) -> DistillableModel:
        return build_model("digits_cnn1x8", num_classes, in_channels)

    assert list_models(8)[-1] == "my_cnn" and feature_channels("my_cnn") == 8
    assert build_model("my_cnn", num_classes=3).feature_channels == 8
    with pytest.raises(ValueError, match="'bare': facts family, feature_channels, in_channels missing or unknown"):
        own_models.register("bare", input_size=8)(my_cnn)
    assert "bare" not in list_models()


def test_a_declared_model_without_a_builder_fails_loudly(own_models) -> None:
    own_models.declare("ghost", **model_info("resnet20"))
    with pytest.raises(RuntimeError, match="'ghost' declared but provided by no factory after tuner.core.models"):
        own_models.check_provided()  # what importing tuner.core.models runs
    with pytest.raises(RuntimeError, match="model 'ghost' is declared but no factory provides it"):
        build_model("ghost", num_classes=3)


def test_unknown_name_lists_valid_names_and_suggests() -> None:
    with pytest.raises(UnknownNameError) as err:
        build_model("resnet8x5", num_classes=10)
    message = str(err.value)
    assert 'did you mean "resnet8x4"' in message
    assert all(name in message for name in list_models())
    with pytest.raises(KeyError):
        model_info("no_such_model")


def _same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_load_weights_round_trips_our_keys(tmp_path) -> None:
    src, dst = build_model("resnet18", num_classes=10), build_model("resnet18", num_classes=10)
    torch.save(src.state_dict(), tmp_path / "ours.pth")
    assert load_weights(dst, tmp_path / "ours.pth") is dst
    for key, value in src.state_dict().items():
        assert torch.equal(value, dst.state_dict()[key]), key
    _same_outputs(src, dst, torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_load_weights_accepts_torchvision_keys(tmp_path, arch: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    tv = getattr(torchvision.models, arch)(weights=None, num_classes=10)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    ours = load_weights(build_model(arch, num_classes=10), tmp_path / "tv.pth")
    _same_outputs(tv, ours, torch.randn(1, 3, 64, 64))


def test_load_weights_accepts_wrapped_foreign_checkpoint(tmp_path) -> None:
    """RepDistiller saves {"model": sd} with the classifier named "classifier" (VGG); DataParallel adds "module."."""
    src = build_model("vgg8", num_classes=100)
    foreign = {"module." + k.replace("fc.", "classifier.", 1): v for k, v in src.state_dict().items()}
    torch.save({"model": foreign, "epoch": 240}, tmp_path / "ckpt.pth")
    dst = load_weights(build_model("vgg8", num_classes=100), tmp_path / "ckpt.pth")
    _same_outputs(src, dst, torch.randn(1, 3, 32, 32))


def test_load_weights_rejects_mismatched_weights(tmp_path) -> None:
    torch.save(build_model("digits_cnn2x4", num_classes=10).state_dict(), tmp_path / "small.pth")
    with pytest.raises(RuntimeError):
        load_weights(build_model("digits_cnn2x8", num_classes=10), tmp_path / "small.pth")


def test_count_params_and_macs_by_hand() -> None:
    model = build_model("digits_cnn1x8", num_classes=10)
    # conv 1->8 3x3 (no bias) 72 + BN 16 + fc 8*10+10 90
    assert count_params(model) == 178
    # conv: 8 out x 1 in x 9 taps x 64 positions = 4608; fc: 8 x 10 = 80
    assert count_macs(model, (1, 8, 8)) == 4608 + 80
    # two layers of 4 channels: 4*1*9*64 + 4*4*9*64 + 4*10
    assert count_macs(build_model("digits_cnn2x4", num_classes=10), (1, 1, 8, 8)) == 2304 + 9216 + 40


def test_count_macs_restores_mode_and_leaves_bn_stats() -> None:
    model = build_model("digits_cnn2x4", num_classes=10)
    bn = model.features[1]
    before = bn.running_mean.clone()
    model.train()
    count_macs(model, (1, 8, 8))
    assert model.training and torch.equal(bn.running_mean, before)
    model.eval()
    count_macs(model, (1, 8, 8))
    assert not model.training
    with pytest.raises(ValueError):
        count_macs(model, (8, 8))
