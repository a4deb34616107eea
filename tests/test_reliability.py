"""Faults and safety: determinism, exact resume after SIGKILL, no network, outputs never overwrite inputs."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_cli import fit_args

from medseg.cli import main
from medseg.data.demo import generate_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel")
    generate_dataset(root / "train", 2, seed=3, shape=(48, 48, 32))
    return root


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_same_seed_same_weights(two_cases, tmp_path):
    for name in ("a", "b"):
        assert main(fit_args(two_cases, tmp_path / name, 3)) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main([*fit_args(two_cases, tmp_path / "c", 3), "--data.init_args.seed", "1"]) == 0
    c = _weights(tmp_path / "c")
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [3, 4])  # mid epoch 2, and right after the epoch-2 checkpoint
def test_sigkill_mid_fit_then_resume_gives_the_uninterrupted_weights(two_cases, tmp_path, kill_at):
    """2 cases, 2 steps an epoch, 6 steps: killed with SIGKILL, resumed with --ckpt_path last."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}

    def fit(run: Path, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "medseg.cli", *fit_args(two_cases, run, 6), *extra]
        return subprocess.run(
            command, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, cwd=ROOT
        )

    straight = fit(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = tmp_path / "resumed"
    killed = fit(run, "--trainer.callbacks+=killer.KillAtStep", f"--trainer.callbacks.step={kill_at}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] < kill_at + 1
    resumed = fit(run, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "straight"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed fit diverged from the uninterrupted one"


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection attempt fails the test (loopback included)."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"network connection attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    return attempts


def test_fit_and_predict_open_no_connection(two_cases, tmp_path, no_network):
    run = tmp_path / "run"
    assert main(fit_args(two_cases, run, 1)) == 0
    out = tmp_path / "pred"
    assert (
        main(["predict", str(two_cases / "train"), "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)])
        == 0
    )
    assert no_network == []


def test_output_never_overwrites_an_input(two_cases, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(fit_args(two_cases, run, 1)) == 0
    ckpt = str(run / "checkpoints" / "last.ckpt")
    case = tmp_path / "BraTS2021_00000"  # a copy: the shared cases stay as they are for other tests
    shutil.copytree(two_cases / "train" / "BraTS2021_00000", case)
    before = {p.name: p.read_bytes() for p in case.iterdir()}
    assert main(["predict", str(case), "--ckpt", ckpt, "--out", str(case)]) == 0  # beside the inputs
    assert all((case / name).read_bytes() == data for name, data in before.items())
    # one 4-D scan x.nii.gz predicted into its own folder would be replaced by x.nii.gz: refused up front
    images = [nib.load(str(case / f"BraTS2021_00000_{m}.nii.gz")) for m in ("t1", "t1ce", "t2", "flair")]
    stacked = nib.Nifti1Image(np.stack([np.asarray(i.dataobj) for i in images], -1), images[0].affine)
    flat = tmp_path / "flat"
    flat.mkdir()
    nib.save(stacked, str(flat / "x.nii.gz"))
    original = (flat / "x.nii.gz").read_bytes()
    assert main(["predict", str(flat / "x.nii.gz"), "--ckpt", ckpt, "--out", str(flat)]) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert (flat / "x.nii.gz").read_bytes() == original


def test_unwritable_output_fails_before_work(two_cases, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere: what a user without the permission sees
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != out)
    code = main(["predict", str(two_cases / "train"), "--ckpt", "missing.ckpt", "--out", str(out / "pred")])
    assert code == 1 and f"not writable (no permission to write in {out})" in capsys.readouterr().err
    assert not (out / "pred").exists()


def test_output_that_is_a_file_is_named_before_work(two_cases, tmp_path, capsys):
    (tmp_path / "taken").write_text("keep me", encoding="utf-8")
    for out in (tmp_path / "taken", tmp_path / "taken" / "pred"):
        code = main(["predict", str(two_cases / "train"), "--ckpt", "missing.ckpt", "--out", str(out)])
        assert code == 1 and f"{tmp_path / 'taken'} is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text(encoding="utf-8") == "keep me"


def test_predict_cleans_what_a_killed_run_left_and_checks_space(two_cases, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(fit_args(two_cases, run, 1)) == 0
    ckpt = str(run / "checkpoints" / "last.ckpt")
    out = tmp_path / "pred"
    out.mkdir()
    stale = out / ".BraTS2021_00000.k3j2.partial.nii.gz"  # what SIGKILL during a write leaves behind
    stale.write_bytes(b"half a file")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    writing = out / ".BraTS2021_00099.x7q1.partial.nii.gz"  # another run's write into the same folder, now
    writing.write_bytes(b"in progress")
    assert main(["predict", str(two_cases / "train"), "--ckpt", ckpt, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [writing.name, "BraTS2021_00000.nii.gz", "BraTS2021_00001.nii.gz"]

    full = shutil.disk_usage(out)._replace(free=1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    code = main(["predict", str(two_cases / "train"), "--ckpt", ckpt, "--out", str(tmp_path / "other")])
    assert code == 1 and "MiB free" in capsys.readouterr().err


def test_image_logging_can_be_switched_off():
    """log_images: 0 sends no picture of a scan to any logger (data that must not leave the site)."""
    from medseg.modules.segmentation import SegmentationModule

    module = SegmentationModule(net=torch.nn.Conv3d(4, 3, 3, padding=1), roi_size=(16, 16, 16), log_images=0)
    calls = []
    module._log_overlay = lambda *a, **k: calls.append(a)
    module.log_dict = lambda *a, **k: None
    batch = {"image": torch.randn(1, 4, 16, 16, 16), "label": torch.zeros(1, 3, 16, 16, 16)}
    module.validation_step(batch, 0)
    assert calls == []
    module.hparams.log_images = 1
    module.validation_step(batch, 0)
    assert len(calls) == 1


def test_fit_on_a_bad_case_is_one_line_naming_it(tmp_path, capsys):
    """NaN voxels in one training case: fit stops before training with the case and file named."""
    generate_dataset(tmp_path / "train", 2, seed=6, shape=(48, 48, 32))
    bad = tmp_path / "train" / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz"
    image = nib.load(str(bad))
    data = np.asarray(image.dataobj).astype(np.float32)
    data[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(bad))
    code = main(fit_args(tmp_path, tmp_path / "run", 1))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("medseg: error: case BraTS2021_00001:") and "flair.nii.gz" in err and "NaN" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fit_on_a_missing_folder_is_one_line_before_the_logger_starts(tmp_path, capsys):
    """The data is read before wandb starts: no empty offline run is left, and the error is the last line."""
    run = tmp_path / "run"
    wandb = ["--trainer.logger", "pytorch_lightning.loggers.WandbLogger", "--trainer.logger.save_dir", str(run)]
    args = [*fit_args(tmp_path / "nope", run, 1), *wandb, "--trainer.logger.offline", "true"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"medseg: error: {tmp_path / 'nope' / 'train'}: no such folder"
    assert not run.exists()


def test_outputs_that_cannot_be_written_are_one_line_before_work(two_cases, tmp_path, capsys):
    """Every command that writes a file or folder names the problem before it loads a model or reads data."""
    taken = tmp_path / "taken"
    taken.write_text("keep me", encoding="utf-8")
    data, config = str(two_cases / "train"), str(ROOT / "configs" / "swin_unetr_demo.yaml")
    commands = {
        "plan": ["plan", data, "-o", str(taken / "plan.yaml")],
        "evaluate": ["evaluate", "--pred", data, "--label", data, "--out", str(taken / "scores")],
        "export": ["export", "--ckpt", "missing.ckpt", "--out", str(taken / "net.onnx")],
        "calibrate": ["calibrate", data, "--ckpt", "missing.ckpt", "--out", str(taken / "t.json")],
        "cv": ["cv", "--config", config, "--folds", "2", "--out", str(taken / "cv"),
               "--", "--data.init_args.data_dir", data],
        "zero-shot": ["zero-shot", data, "--ckpt", "missing.ckpt", "--classes", "a", "b",
                      "--out", str(taken / "p.csv")],
        "demo-data": ["demo-data", "--out", str(taken / "demo"), "--cases", "1"],
    }  # fmt: skip
    for name, argv in commands.items():
        assert main(argv) == 1, name
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("medseg: error:") and str(taken) in err[-1], (name, err)
        assert not any("Traceback" in line for line in err), name
    code = main(["postprocess", data, "--ckpt", "missing.ckpt", "--out", str(tmp_path)])
    assert code == 1 and f"{tmp_path} is a folder; give a file name" in capsys.readouterr().err
    assert taken.read_text(encoding="utf-8") == "keep me"
