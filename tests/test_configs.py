"""configs/: experiment files compose the shared trainer and logger pieces (configs/trainer/, configs/logger/)."""

from pathlib import Path

import pytest
import yaml

from medseg.cli import MedsegCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _resolved(tmp_path, monkeypatch, capsys, *args) -> dict:
    monkeypatch.chdir(tmp_path)  # the pieces are found relative to the experiment file, not the working dir
    with pytest.raises(SystemExit):
        MedsegCLI(args=["fit", *args, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def test_experiment_takes_the_shared_trainer_and_logger_and_overrides_single_keys(tmp_path, monkeypatch, capsys):
    trainer = _resolved(tmp_path, monkeypatch, capsys, "--config", str(CONFIGS / "swin_unetr_demo.yaml"))["trainer"]
    assert (trainer["precision"], trainer["devices"], trainer["max_epochs"]) == ("32-true", 1, -1)  # trainer/cpu.yaml
    assert trainer["logger"]["class_path"] == "pytorch_lightning.loggers.WandbLogger"  # logger/wandb.yaml
    assert trainer["logger"]["init_args"]["offline"] is True
    assert trainer["logger"]["init_args"]["save_dir"] == "runs/swin_unetr_demo"  # the experiment's own keys
    assert trainer["max_steps"] == 150


def test_command_line_overrides_the_composed_config(tmp_path, monkeypatch, capsys):
    config = _resolved(
        tmp_path, monkeypatch, capsys,
        "--config", str(CONFIGS / "detr_demo.yaml"), "--trainer.max_steps", "3", "--trainer.precision", "bf16-mixed",
    )  # fmt: skip
    trainer = config["trainer"]
    assert (trainer["max_steps"], trainer["precision"], trainer["gradient_clip_val"]) == (3, "bf16-mixed", 0.1)
    assert trainer["logger"] == {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": trainer["logger"]["init_args"],
    }
    assert "project" not in trainer["logger"]["init_args"]  # the experiment's CSVLogger replaced the piece's wandb


def test_pretrain_config_composes_with_the_pretraining_module_and_data(tmp_path, monkeypatch, capsys):
    from medseg.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", str(CONFIGS / "pretrain_demo.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "medseg.modules.pretrain.PretrainModule"
    assert config["data"]["class_path"] == "medseg.data.unlabelled.UnlabelledDataModule"
    assert config["trainer"]["precision"] == "32-true" and config["trainer"]["max_steps"] == 400


def test_brats_config_trains_with_deep_supervision(tmp_path, monkeypatch, capsys):
    net = _resolved(tmp_path, monkeypatch, capsys, "--config", str(CONFIGS / "swin_unetr_brats.yaml"))["model"]
    assert net["init_args"]["net"]["init_args"]["deep_supervision"] == 3
