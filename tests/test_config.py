"""TrialConfig: dict/YAML round trip, type coercion, and one-line errors naming field and allowed values."""
from __future__ import annotations

from pathlib import Path

import pytest

from tuner.core.config import ConfigError, TrialConfig
from tuner.core.sweep_config import SweepConfig


def test_defaults_validate_and_round_trip_through_dict_and_yaml(tmp_path):
    cfg = TrialConfig.from_dict({"alpha": 10, "beta": "5", "lr_milestones": [0.5, 0.75]})
    assert cfg.alpha == 10.0 and isinstance(cfg.alpha, float) and cfg.beta == 5.0
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert SweepConfig.from_yaml(path)[1] == cfg


def test_yaml_overrides_take_precedence_and_none_is_ignored(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("alpha: 2\nepochs: 7\n")
    cfg = SweepConfig.from_yaml(path, {"alpha": "3", "epochs": None})[1]
    assert cfg.alpha == 3.0 and cfg.epochs == 7


def test_replace_validates():
    cfg = TrialConfig()
    assert cfg.replace(beta=5).beta == 5.0
    with pytest.raises(ConfigError, match="^beta: "):
        cfg.replace(beta=-1)


def test_needs_teacher():
    assert TrialConfig().needs_teacher
    assert not TrialConfig.from_dict({"alpha": 0, "beta": 0}).needs_teacher
    assert TrialConfig.from_dict({"alpha": 0, "beta": 0, "gamma": 1}).needs_teacher


@pytest.mark.parametrize(
    "data, message",
    [
        ({"alpah": 1}, r"^alpah: unknown config field \(did you mean \"alpha\"\?\); allowed: .*beta"),
        ({"alpha": -1}, r"^alpha: -1.0 is out of range; allowed: \[0, inf\]$"),
        ({"beta": "lots"}, r"^beta: must be a number, got 'lots'$"),
        ({"beta": float("nan")}, r"^beta: must be a finite number"),
        ({"lr": 0}, r"^lr: 0.0 is out of range; allowed: \(0, inf\]$"),
        ({"momentum": 1.0}, r"^momentum: 1.0 is out of range; allowed: \[0, 1\)$"),
        ({"epochs": 0}, r"^epochs: 0 is out of range; allowed: \[1, inf\]$"),
        ({"epochs": 2.5}, r"^epochs: must be an integer, got 2.5$"),
        ({"batch_size": True}, r"^batch_size: must be an integer"),
        ({"nesterov": "maybe"}, r"^nesterov: must be true or false, got 'maybe'$"),
        ({"optimizer": "adam"}, r"^optimizer: 'adam' is not allowed \(did you mean \"adamw\"\?\); choose from: sgd, adamw$"),
        ({"schedule": "step"}, r"^schedule: 'step' is not allowed.*choose from: multistep, cosine, constant$"),
        ({"device": "xla"}, r"^device: 'xla' is not allowed; choose from: auto, cpu, cuda$"),
        ({"student": "resnet8x5"}, r"^student: 'resnet8x5' is not allowed \(did you mean \"resnet8x4\"\?\)"),
        ({"teacher": "nope"}, r"^teacher: 'nope' is not allowed; choose from: .*resnet32x4"),
        ({"connector": "conv1x1"}, r"^connector: 'conv1x1' is not allowed \(did you mean"),
        ({"dataset": "cifar1000"}, r"^dataset: 'cifar1000' is not allowed \(did you mean \"cifar100\"\?\)"),
        ({"lr_milestones": [150, 180]}, r"^lr_milestones: 150.0 is not allowed; give fractions"),
        ({"lr_milestones": [0.8, 0.5]}, r"^lr_milestones: .* must be increasing$"),
        ({"lr_milestones": "soon"}, r"^lr_milestones: must be a list of numbers"),
        ({"nesterov": True, "optimizer": "adamw"}, r"^nesterov: true needs optimizer: sgd"),
        ({"teacher_epochs": 0}, r"^teacher_epochs: 0 needs a teacher_checkpoint"),
        ({"val_fraction": 1}, r"^val_fraction: 1.0 is out of range"),
        ({"dataset": None}, r"^dataset: must be a string, got null$"),
    ],
)
def test_bad_values_give_one_line_errors(data, message):
    with pytest.raises(ConfigError, match=message) as e:
        TrialConfig.from_dict(data)
    assert "\n" not in str(e.value)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: file .*missing.yaml' does not exist$"):
        SweepConfig.from_yaml(tmp_path / "missing.yaml")[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpha: [1, 2\n")
    with pytest.raises(ConfigError, match=r"^config: .*bad.yaml line \d+ is not valid YAML"):
        SweepConfig.from_yaml(bad)[1]
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        SweepConfig.from_yaml(listy)[1]


def test_yaml_is_data_not_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("alpha: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        SweepConfig.from_yaml(evil)[1]


@pytest.mark.parametrize("preset", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_every_preset_validates_as_sweep_and_trial(preset):
    from tuner.core.config import load_yaml

    sweep, base = SweepConfig.split(load_yaml(Path(__file__).parents[1] / "configs" / preset))
    # digits.yaml names the default preset; the CIFAR and ImageNet recipes are the authors': only the weights
    assert sweep.space in ("recipe", "loss_weights") and base.epochs >= 1


def test_sweep_split_routes_keys_and_rejects_unknown_ones():
    from tuner.core.sweep_config import SweepConfig

    sweep, base = SweepConfig.split({"space": "ablation", "seeds": "5", "alpha": 2, "seed": 7, "gpus_per_trial": 0.25})
    assert (sweep.space, sweep.seeds, sweep.seed, sweep.gpus_per_trial) == ("ablation", 5, 7, 0.25)
    assert (base.alpha, base.seed) == (2.0, 7)
    with pytest.raises(ConfigError, match=r"^num_sample: unknown config field \(did you mean \"num_samples\"\?\)"):
        SweepConfig.split({"num_sample": 3})
    with pytest.raises(ConfigError, match=r"^searcher: 'cmaes' is not allowed; choose from: tpe, random, gp, grid, nsga2$"):
        SweepConfig.split({"searcher": "cmaes"})
    with pytest.raises(ConfigError, match=r"^cpus_per_trial: 0.0 is out of range"):
        SweepConfig.split({"cpus_per_trial": 0})
    with pytest.raises(ConfigError, match=r"^name: 'a b' is not allowed"):
        SweepConfig.split({"name": "a b"})


def test_trial_config_reads_a_sweep_preset_ignoring_its_sweep_keys():
    cfg = SweepConfig.from_yaml(Path(__file__).parents[1] / "configs" / "digits.yaml", {"beta": 5})[1]
    assert (cfg.teacher, cfg.student, cfg.beta) == ("digits_cnn4x64", "digits_cnn2x4", 5.0)


def test_a_searched_value_reads_the_same_in_the_cli_the_run_names_the_verdict_and_the_report():
    """0.2935513868643013 was 0.29, 0.294, 0.2936 and itself in four views; now 0.294 in each."""
    import pandas as pd

    from analysis._format import for_display
    from tuner.core.config import fmt_param
    from tuner.core.verdict import label_of
    from tuner.tracking.schema import run_name

    alpha, lr = 0.2935513868643013, 0.495
    assert fmt_param(alpha) == "0.294" and fmt_param(lr) == "0.495" and fmt_param(1e-5) == "1e-05"
    assert run_name({"alpha": alpha, "beta": 1.0}, ["alpha", "beta"]) == "a=0.294 b=1"
    assert label_of({"alpha": alpha, "lr": lr}) == "alpha 0.294 lr 0.495"
    # one name whatever order the params came in (the driver's config, the report's columns)
    assert label_of({"weight_decay": 5e-4, "lr": lr, "beta": 2.0, "alpha": alpha}) == \
        label_of({"alpha": alpha, "beta": 2.0, "lr": lr, "weight_decay": 5e-4}) == "alpha 0.294 beta 2 lr 0.495 weight_decay 0.0005"
    shown = for_display(pd.DataFrame({"alpha": [alpha], "lr": [lr], "best_val_acc": [84.16666666]}))
    assert list(shown.iloc[0]) == ["0.294", "0.495", "84.17"]
