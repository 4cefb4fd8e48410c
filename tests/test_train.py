"""The epoch loop without Ray: determinism, metrics, schedules, resume, divergence, CLI."""
from __future__ import annotations

import math

import pytest
import torch

from tuner.core import metrics as M
from tuner.core.config import TrialConfig
from tuner.core.teacher import ensure_teacher
from tuner.core.train import main
from tuner.core.trainer import Diverged, Trainer, load_splits

QUICK = {"epochs": 3, "teacher_epochs": 3, "batch_size": 128, "threads": 1}


@pytest.fixture(scope="module")
def digits():
    cfg = TrialConfig.from_dict(QUICK)
    splits = load_splits(cfg)
    return cfg, splits, ensure_teacher(cfg, splits)


def test_same_config_and_seed_give_identical_numbers(digits):
    cfg, splits, teacher = digits
    a = Trainer(cfg, teacher.model, splits).fit()
    b = Trainer(cfg, teacher.model, splits).fit()
    strip = lambda rows: [{k: v for k, v in r.items() if k not in (M.IMAGES_PER_S, M.EPOCH_TIME_S, M.STEP_TIME_S)} for r in rows]
    # Accuracies exactly; losses to 1e-6: on some CPUs (an H100 host's, seen) a BLAS kernel's result
    # depends on memory alignment in the last bits of a float32.
    assert [{k: v for k, v in r.items() if "acc" in k} for r in a.history] == \
        [{k: v for k, v in r.items() if "acc" in k} for r in b.history]
    assert strip(a.history) == [pytest.approx(r, rel=1e-6) for r in strip(b.history)]
    assert a.final[M.TEST_ACC] == b.final[M.TEST_ACC]
    c = Trainer(cfg.replace(seed=1), teacher.model, splits).fit()
    assert strip(c.history) != strip(a.history)


def test_history_has_every_per_epoch_metric(digits):
    cfg, splits, teacher = digits
    result = Trainer(cfg.replace(gamma=0.5), teacher.model, splits).fit()
    assert [r[M.EPOCH] for r in result.history] == [1, 2, 3]
    for row in result.history:
        assert set(M.PER_EPOCH) <= set(row)
        assert all(math.isfinite(v) for v in row.values())
        assert row[M.LOSS_FM] > 0 and row[M.LOSS_SR] > 0 and row[M.LOSS_KD] > 0
        assert 0 <= row[M.VAL_ACC] <= 100 and row[M.IMAGES_PER_S] > 0
    assert 0 <= result.final[M.TEST_ACC] <= 100
    assert result.history[-1][M.BEST_VAL_ACC] == max(r[M.VAL_ACC] for r in result.history)


def test_training_learns(digits):
    cfg, splits, teacher = digits
    assert teacher.val_acc > 50  # 3 epochs already put the teacher far above chance (10%)
    result = Trainer(cfg.replace(epochs=4), teacher.model, splits).fit()
    assert result.history[-1][M.LOSS_CE] < result.history[0][M.LOSS_CE]


@pytest.mark.parametrize("schedule, lrs", [
    ("multistep", [0.1, 0.1, 0.01, 0.001]),  # milestones 0.5, 0.75 of 4 epochs -> after epochs 2 and 3
    ("constant", [0.1] * 4),
])
def test_lr_schedules(digits, schedule, lrs):
    cfg, splits, _ = digits
    cfg = cfg.replace(alpha=0, beta=0, lr=0.1, epochs=4, schedule=schedule, lr_milestones=[0.5, 0.75])
    got = [r[M.LR] for r in Trainer(cfg, None, splits).fit().history]
    assert got == pytest.approx(lrs)


def test_cosine_and_adamw_run(digits):
    cfg, splits, _ = digits
    cfg = cfg.replace(alpha=0, beta=0, optimizer="adamw", lr=1e-3, schedule="cosine", epochs=2)
    rows = Trainer(cfg, None, splits).fit().history
    assert rows[1][M.LR] < rows[0][M.LR]


def test_resume_from_state_dict_continues_exactly(digits):
    cfg, splits, teacher = digits
    straight = Trainer(cfg, teacher.model, splits).fit()
    first = Trainer(cfg, teacher.model, splits)
    first.step()
    state = first.state_dict()
    buf = __import__("io").BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    resumed = Trainer(cfg, teacher.model, splits)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.epoch == 1
    done = resumed.fit()
    assert [r[M.EPOCH] for r in done.history] == [1, 2, 3]
    for a, b in zip(straight.history, done.history):
        assert a[M.VAL_ACC] == b[M.VAL_ACC] and a[M.LOSS_TOTAL] == pytest.approx(b[M.LOSS_TOTAL], rel=1e-6)
    assert straight.final[M.TEST_ACC] == done.final[M.TEST_ACC]


def test_a_restore_reads_the_checkpoint_where_it_lies_not_through_a_shared_temp_folder(digits, tmp_path, monkeypatch):
    """The ranks of a restarted worker group restore at once: a temp folder they shared was rewritten under a
    reader (tuner.driver.trainable.restore), so restoring must not need one: here there is none to write."""
    from ray import tune

    from tuner.driver.atomic_fs import AtomicLocalHandler
    from tuner.driver.trainable import restore, save_state
    from tuner.core.trainer import STATE_FILE

    cfg, splits, teacher = digits
    first = Trainer(cfg, teacher.model, splits)
    first.step()
    (tmp_path / "ckpt").mkdir()
    save_state(first.state_dict(), tmp_path / "ckpt" / STATE_FILE)
    checkpoint = tune.Checkpoint(str(tmp_path / "ckpt"), filesystem=AtomicLocalHandler.filesystem())
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no-such-folder"))
    resumed = Trainer(cfg, teacher.model, splits)
    restore(resumed, checkpoint)
    assert resumed.epoch == 1 and resumed.best_val_acc == first.best_val_acc
    assert all(torch.equal(a, b) for a, b in zip(resumed.student.state_dict().values(), first.student.state_dict().values()))


def test_a_checkpoint_carries_its_trial_config_and_the_export_reads_it(digits, tmp_path):
    """The checkpoint holds the full TrialConfig (as nanoGPT's do): export needs nothing rebuilt."""
    from tuner.core.export import checkpoint_config, export_student, load_student

    cfg, splits, teacher = digits
    cfg = cfg.replace(alpha=2.5, beta=0.75, connector="conv3x3_bn_relu")
    trainer = Trainer(cfg, teacher.model, splits)
    trainer.step()
    torch.save(trainer.state_dict(), tmp_path / "trainer_state.pt")
    assert checkpoint_config(tmp_path / "trainer_state.pt") == cfg
    out = export_student(tmp_path / "trainer_state.pt", splits, teacher.model.feature_channels, {"val_acc": 1.0},
                         tmp_path / "student.pt")
    loaded = load_student(out)
    assert loaded.config == cfg and loaded.connector is not None
    old = {k: v for k, v in trainer.state_dict().items() if k != "config"}  # written before checkpoints had it
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="without its config"):
        checkpoint_config(tmp_path / "old.pt")


def test_divergence_stops_with_the_epoch(digits):
    cfg, splits, teacher = digits
    with pytest.raises(Diverged) as e:
        Trainer(cfg.replace(lr=1e6, beta=100.0), teacher.model, splits).fit()
    assert e.value.epoch == 1 and "diverged at epoch 1" in str(e.value)


def test_cli_runs_one_distillation(capsys):
    assert main(["--config", "configs/digits.yaml", "--epochs", "2", "--teacher-epochs", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "distilling digits_cnn4x64 -> digits_cnn2x4" in out
    assert "epoch   2" in out and "test_acc" in out


def test_cli_bad_input_exits_2_with_one_line(capsys):
    assert main(["--alpha", "-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: alpha: -3.0 is out of range; allowed: [0, inf]"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trainer_matches_cpu_and_its_checkpoint_loads_on_cpu(digits):
    """On CUDA (fp32, channels_last, teacher from CUDA graphs) SRRL learns as on the CPU; its state continues on a CPU Trainer."""
    import copy

    cfg, splits, teacher = digits
    cfg = cfg.replace(epochs=4)
    gpu = Trainer(cfg.replace(device="cuda"), copy.deepcopy(teacher.model), splits)
    assert gpu.memory_format == torch.channels_last and next(gpu.student.parameters()).is_cuda
    result = gpu.fit()
    graphed = gpu.distiller._teacher_forward
    assert graphed._graphs and not graphed._failed  # the teacher ran from CUDA graphs, not the eager fallback
    on_cpu = Trainer(cfg, copy.deepcopy(teacher.model), splits).fit()
    losses = [r[M.LOSS_TOTAL] for r in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert result.history[-1][M.LOSS_FM] > 0 and result.history[-1][M.LOSS_SR] > 0
    # same seed, data order and init; GPU kernels round differently, which moves the numbers a little
    assert losses[-1] == pytest.approx(on_cpu.history[-1][M.LOSS_TOTAL], rel=0.05)
    assert result.final[M.TEST_ACC] == pytest.approx(on_cpu.final[M.TEST_ACC], abs=5.0)
    buf = __import__("io").BytesIO()
    torch.save(gpu.state_dict(), buf)
    buf.seek(0)
    cpu = Trainer(cfg, copy.deepcopy(teacher.model), splits)
    cpu.load_state_dict(torch.load(buf, weights_only=True, map_location="cpu"))
    assert cpu.epoch == 4
    val_acc, _ = cpu.evaluate("val")  # on the CPU against the evaluation on the GPU
    assert val_acc == pytest.approx(result.history[-1][M.VAL_ACC], abs=2.0)
