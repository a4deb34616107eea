"""`medseg cv`: deterministic folds, one fit per fold, out-of-fold predictions scored per fold and pooled."""

import json
from pathlib import Path

import pytest
from conftest import TINY_NET

from medseg.cli import main
from medseg.data.base import kfold_assignment
from medseg.data.demo import generate_dataset
from medseg.errors import LayoutError

ROOT = Path(__file__).resolve().parents[1]


def test_kfold_assignment_is_deterministic_and_balanced():
    cases = [{"case_id": f"c{i:02d}"} for i in range(10)]
    first = kfold_assignment(cases, 3, seed=0)
    assert first == kfold_assignment(list(reversed(cases)), 3, seed=0)  # the ids decide, not the order
    assert sorted(list(first.values()).count(k) for k in range(3)) == [3, 3, 4]
    assert first != kfold_assignment(cases, 3, seed=1)
    with pytest.raises(LayoutError, match="3 folds need at least 3"):
        kfold_assignment(cases[:2], 3, seed=0)


@pytest.mark.parametrize("command", ["cv", "demo"])
def test_a_stray_positional_is_a_usage_error_not_a_fit_failure(command, tmp_path, capsys):
    """argparse hands positionals to the fit options; a value before any option means one misplaced."""
    argv = [command, str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    if command == "cv":
        argv += ["--config", str(ROOT / "configs" / "swin_unetr_demo.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"unexpected argument '{tmp_path / 'data'}'" in err and "go after --" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cv_end_to_end_and_resumable(tmp_path, capsys):
    data = tmp_path / "data"
    generate_dataset(data, 3, seed=4, shape=(40, 40, 32))
    out = tmp_path / "cv"
    args = ["cv", "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"), "--folds", "3", "--out", str(out),
            "--no-hd95", "--", "--data.init_args.data_dir", str(data), "--trainer.max_steps", "1",
            "--data.init_args.roi_size", "[32, 32, 32]", "--model.init_args.roi_size", "[32, 32, 32]",
            "--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(out),
            *TINY_NET]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fold 2: fit trained" in printed and "pooled over all folds" in printed and "WT" in printed
    splits = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    assert sorted(c for fold in splits["folds"] for c in fold) == sorted(p.name for p in data.iterdir() if p.is_dir())
    assert sorted(p.name for p in (out / "oof").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in sorted(
        c for fold in splits["folds"] for c in fold)]  # fmt: skip
    summary = json.loads((out / "metrics_summary.json").read_text(encoding="utf-8"))
    assert summary["n_cases"] == 3 and set(summary["folds"]) == {"0", "1", "2"}
    assert "fold" in (out / "metrics_per_case.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "post-processing chosen on the out-of-fold predictions" in printed and "out-of-fold ECE after" in printed
    assert (out / "fold_2" / "checkpoints" / "calibration.json").is_file()
    stored = [(out / f"fold_{k}" / "checkpoints" / "postprocess.json").read_text(encoding="utf-8") for k in range(3)]
    stored = [json.loads(text) for text in stored]
    assert stored[0] == stored[1] == stored[2]  # the same choice with every fold's model
    ckpts = [str(out / f"fold_{k}" / "checkpoints" / "last.ckpt") for k in range(3)]
    assert main(["predict", str(data), "--ckpt", *ckpts, "--out", str(tmp_path / "ensemble")]) == 0  # one task
    assert len(list((tmp_path / "ensemble").glob("*.nii.gz"))) == 3
    # a rerun skips finished folds; a fold without its marker resumes from last.ckpt
    (out / "fold_1" / "fit_done").unlink()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fold 0: fit done" in printed and "fold 1: fit resumed" in printed
