"""Teacher cache: content-hash keys, atomic writes, torn files, user checkpoints."""
from __future__ import annotations

import os

import pytest
import torch

from tuner.core.config import ConfigError, TrialConfig
from tuner.core.models import build_model
from tuner.core.teacher import ensure_teacher, teacher_key
from tuner.core.trainer import load_splits


@pytest.fixture
def cfg(tmp_path):
    return TrialConfig.from_dict({"teacher_epochs": 1, "batch_size": 256, "threads": 1, "cache_dir": str(tmp_path)})


def test_trains_once_then_loads_from_cache(cfg, tmp_path):
    splits = load_splits(cfg)
    logs = []
    first = ensure_teacher(cfg, splits, log=logs.append)
    assert any("training teacher" in line for line in logs)
    assert os.listdir(tmp_path / "teachers") == [f"digits-digits_cnn4x64-{first.key}.pt"]  # no part file left
    logs.clear()
    second = ensure_teacher(cfg, splits, log=logs.append)
    assert any("from cache" in line for line in logs) and not any("training" in line for line in logs)
    assert (second.val_acc, second.test_acc) == (first.val_acc, first.test_acc)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_key_depends_on_recipe_data_and_seed_but_not_on_student_knobs(cfg):
    splits = load_splits(cfg)
    key = teacher_key(cfg, splits)
    assert teacher_key(cfg.replace(alpha=5.0, student="digits_cnn1x8", seed=3), splits) == key
    for change in ({"teacher_seed": 1}, {"lr": 0.01}, {"teacher_epochs": 2}, {"teacher": "digits_cnn2x8"}):
        assert teacher_key(cfg.replace(**change), splits) != key
    import dataclasses
    other = dataclasses.replace(splits, train_y=splits.train_y.flip(0))
    assert teacher_key(cfg, other) != key


def test_torn_cache_file_is_retrained_not_loaded(cfg, tmp_path):
    splits = load_splits(cfg)
    good = ensure_teacher(cfg, splits)
    path = tmp_path / "teachers" / f"digits-digits_cnn4x64-{good.key}.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a killed non-atomic write would leave
    logs = []
    again = ensure_teacher(cfg, splits, log=logs.append)
    assert any("unreadable" in line for line in logs) and any("training teacher" in line for line in logs)
    assert again.val_acc == good.val_acc
    assert torch.load(path, weights_only=True)["val_acc"] == good.val_acc


def test_user_checkpoint_is_loaded_and_evaluated(cfg, tmp_path):
    splits = load_splits(cfg)
    trained = ensure_teacher(cfg, splits)
    path = tmp_path / "mine.pt"
    torch.save(trained.model.state_dict(), path)
    mine = ensure_teacher(cfg.replace(teacher_checkpoint=str(path)), splits)
    assert mine.path == str(path.resolve()) and mine.val_acc == pytest.approx(trained.val_acc)


class Evil:
    """An arbitrary pickled object: ``weights_only=True`` must refuse to unpickle it."""


def test_user_checkpoint_errors(cfg, tmp_path):
    splits = load_splits(cfg)
    wrong = tmp_path / "wrong.pt"
    torch.save(build_model("digits_cnn2x8", 10, in_channels=1).state_dict(), wrong)
    with pytest.raises(ConfigError, match=r"^teacher_checkpoint: .*wrong.pt does not match architecture 'digits_cnn4x64'"):
        ensure_teacher(cfg.replace(teacher_checkpoint=str(wrong)), splits)
    # the right architecture trained on another number of classes: the line says which shapes differ (issue 27.8)
    five = tmp_path / "five.pt"
    torch.save(build_model("digits_cnn4x64", 5, in_channels=1).state_dict(), five)
    with pytest.raises(ConfigError) as e:
        ensure_teacher(cfg.replace(teacher_checkpoint=str(five)), splits)
    assert str(e.value) == (f"teacher_checkpoint: {five} does not match architecture 'digits_cnn4x64' "
                            "(fc.weight is [5, 64] in the file, [10, 64] in the model)")
    with pytest.raises(ConfigError, match=r"^teacher_checkpoint: file .*absent.pt' does not exist$"):
        ensure_teacher(cfg.replace(teacher_checkpoint=str(tmp_path / "absent.pt")), splits)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": Evil()}, pickled)
    with pytest.raises(ConfigError, match="not a readable weights-only PyTorch checkpoint"):
        ensure_teacher(cfg.replace(teacher_checkpoint=str(pickled)), splits)


def test_diverging_teacher_is_a_clear_error(cfg):
    splits = load_splits(cfg)
    with pytest.raises(ConfigError, match=r"^teacher_lr: training the teacher diverged at epoch 1 with lr 1e\+06; set a smaller"):
        ensure_teacher(cfg.replace(lr=1e6, batch_size=64), splits)
    assert teacher_key(cfg.replace(teacher_lr=0.05), splits) == teacher_key(cfg.replace(lr=0.05), splits)
