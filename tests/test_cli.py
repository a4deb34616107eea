"""The `medseg` command end to end: fit -> resume -> predict -> evaluate, on generated data."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_NET

from medseg.cli import main
from medseg.data.demo import generate_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_dataset(root / "train", 3, seed=1, shape=(48, 48, 32))
    generate_dataset(root / "test", 2, seed=1, start_index=500, shape=(48, 48, 32))
    return root


def fit_args(data: Path, run: Path, steps: int, *extra: str, net=TINY_NET, roi="[32, 32, 32]") -> list[str]:
    return [
        "fit",
        "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"),
        "--data.init_args.data_dir", str(data / "train"),
        "--data.init_args.roi_size", roi,
        "--model.init_args.roi_size", roi,
        "--trainer.default_root_dir", str(run),
        "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run),
        "--trainer.max_steps", str(steps),
        *net,
        *extra,
    ]  # fmt: skip


def test_fit_resume_predict_evaluate(demo_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(fit_args(demo_data, run, 2)) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    first = torch.load(ckpt, weights_only=True)
    assert first["global_step"] == 2
    assert first["datamodule_hyper_parameters"]["label_convention"] == "brats2021"

    # interrupted at step 2: `--ckpt_path last` goes on with optimizer, scheduler and loop state
    assert main([*fit_args(demo_data, run, 5), "--ckpt_path", "last"]) == 0
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["global_step"] == 5
    assert resumed["lr_schedulers"][0]["last_epoch"] == 5
    assert resumed["optimizer_states"][0]["state"], "AdamW moments restored and carried on"
    assert resumed["epoch"] >= first["epoch"]

    out = tmp_path / "pred"
    assert main(["predict", str(demo_data / "test"), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["BraTS2021_00500.nii.gz", "BraTS2021_00501.nii.gz"]
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--label", str(demo_data / "test")]) == 0
    table = capsys.readouterr().out
    assert "WT" in table and "ET" in table and "TC" in table

    # validate and test through LightningCLI, sliding-window over whole volumes
    assert main(["validate", *fit_args(demo_data, run, 5)[1:], "--data.init_args.val_fraction", "0.34",
                 "--trainer.limit_val_batches", "1.0", "--ckpt_path", str(ckpt)]) == 0  # fmt: skip


def test_predict_folder_goes_on_past_a_bad_case(demo_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(fit_args(demo_data, run, 1)) == 0
    cases = tmp_path / "cases"
    generate_dataset(cases, 2, seed=2, start_index=700, shape=(48, 48, 32))
    bad = cases / "BraTS2021_00700" / "BraTS2021_00700_t1ce.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    out = tmp_path / "pred"
    code = main(["predict", str(cases), "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "BraTS2021_00700" in err and "t1ce.nii.gz" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["BraTS2021_00701.nii.gz"]
    # a rerun skips the finished case and still reports the bad one
    code = main(["predict", str(cases), "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)])
    assert code == 1 and "already there" in capsys.readouterr().out


def test_bad_layout_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(fit_args(tmp_path, tmp_path / "run", 1)[:1] + [
                "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"),
                "--data.init_args.data_dir", str(tmp_path / "empty"), *TINY_NET,
                "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
                "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "empty") in err and err.startswith("medseg: error:")


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "predict", "evaluate", "demo-data", "demo"):
        assert command in out


@pytest.mark.slow
def test_swin_unetr_fit_and_predict(demo_data, tmp_path):
    """The real network at its smallest training size, through the same commands."""
    run = tmp_path / "run"
    assert main(fit_args(demo_data, run, 2, net=[], roi="[64, 64, 64]")) == 0
    out = tmp_path / "pred"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert main(["predict", str(demo_data / "test" / "BraTS2021_00500"), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert (out / "BraTS2021_00500.nii.gz").exists()


@pytest.mark.slow
def test_ddp_fit_with_two_cpu_processes(demo_data, tmp_path):
    """Lightning DDP (gloo) with 2 CPU processes runs a fit to the end."""
    run = tmp_path / "run"
    args = fit_args(demo_data, run, 2, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                    "--trainer.strategy", "ddp")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "medseg.cli", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_wandb_offline_logs_metrics_config_and_overlays(demo_data, tmp_path, monkeypatch):
    """The default logger: wandb, offline (nothing leaves the machine), with per-region metrics, the
    resolved config and slice overlays of validation cases."""
    import wandb

    wandb.finish()  # a run another test left open in this process would receive the logs instead
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    args = [a for a in fit_args(demo_data, run, 2) if a]
    i = args.index("--trainer.logger")
    del args[i : i + 4]  # back to the config's WandbLogger
    args += [
        "--trainer.logger.init_args.save_dir", str(run),
        "--data.init_args.val_fraction", "0.34",
        "--trainer.limit_val_batches", "1.0",
        "--trainer.check_val_every_n_epoch", "1",
        "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip
    assert main(args) == 0
    [offline] = list((run / "wandb").glob("offline-run-*"))
    keys = (b"val/dice_wt", b"val/dice_et", b"val/dice_tc", b"train/loss", b"swin_unetr_demo", b"roi_size")
    for _ in range(100):  # wandb's writer process may still be flushing the run file after finish()
        record = b"".join(p.read_bytes() for p in offline.glob("*.wandb"))
        if all(key in record for key in keys):
            break
        time.sleep(0.1)
    for key in keys:
        assert key in record, key
    assert list(offline.glob("files/media/images/val/overlay_0*.png"))


@pytest.mark.slow
def test_predict_folder_split_over_two_ddp_processes(demo_data, tmp_path):
    """Lightning DDP predict with 2 CPU processes: every case on exactly one rank, written once."""
    run = tmp_path / "run"
    assert main(fit_args(demo_data, run, 1)) == 0
    cases = tmp_path / "cases"
    generate_dataset(cases, 3, seed=5, start_index=900, shape=(48, 48, 32))
    out = tmp_path / "pred"
    command = [sys.executable, "-m", "medseg.cli", "predict", str(cases),
               "--ckpt", str(run / "checkpoints" / "last.ckpt"),
               "--out", str(out), "--devices", "2", "--device", "cpu"]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [line.split(":", 1)[1].split() for line in result.stdout.splitlines() if line.strip().startswith("rank ")]
    assert len(ranks) == 2 and all(ranks)
    assert sorted(sum(ranks, [])) == ["BraTS2021_00900", "BraTS2021_00901", "BraTS2021_00902"]  # each once
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [
        "BraTS2021_00900.nii.gz",
        "BraTS2021_00901.nii.gz",
        "BraTS2021_00902.nii.gz",
    ]
