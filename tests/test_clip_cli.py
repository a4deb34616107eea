"""CLIP-style image-report model end to end: demo reports, report pairs from files, `medseg fit` then
`medseg zero-shot`, Lightning DDP on two CPU processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def demo_pairs(tmp_path_factory) -> Path:
    from medseg.data.demo import generate_dataset
    from medseg.data.demo_reports import write_demo_reports

    root = tmp_path_factory.mktemp("clip")
    kwargs = {"shape": (32, 32, 32), "spacing": (4.0, 4.0, 4.0), "p_enhancing": 0.5, "p_necrosis": 0.5}
    generate_dataset(root / "train", 6, seed=3, **kwargs)
    generate_dataset(root / "test", 2, seed=3, start_index=50, **kwargs)
    write_demo_reports(root / "train")
    write_demo_reports(root / "test")
    return root


def test_demo_reports_describe_their_own_case(demo_pairs):
    from medseg.data.reports import read_pairs

    truth = json.loads((demo_pairs / "train" / "demo_truth.json").read_text(encoding="utf-8"))
    pairs = read_pairs(demo_pairs / "train" / "reports.jsonl")
    assert sorted(p["case_id"] for p in pairs) == sorted(truth)
    for pair in pairs:
        lesion = truth[pair["case_id"]]["lesions"][0]
        text = pair["report"].lower()
        assert lesion["hemisphere"] in text and lesion["lobe"] in text
        assert f"{lesion['volume_ml']:.0f} ml" in text
        other = "right" if lesion["hemisphere"] == "left" else "left"
        assert f"{other} " not in text and f"{other}-" not in text
        negated = any(
            s in text for s in ("no contrast enhancement", "does not enhance", "no enhancing", "non-enhancing")
        )
        assert negated != lesion["enhancing"]
        assert pair["labels"]["enhancing"] == ("yes" if lesion["enhancing"] else "no")
        necrosis = any(s in text for s in ("central necrosis", "necrotic centre", "necrotic core"))
        assert necrosis == (lesion["enhancing"] and lesion["necrotic"])
        edema = {
            "minimal": ("minimal", "little", "thin rim"),
            "moderate": ("moderate",),
            "extensive": ("extensive", "widely"),
        }
        assert [extent for extent, words in edema.items() if any(w in text for w in words)] == [lesion["edema_extent"]]
    assert len({p["report"].split(" ")[0] for p in pairs}) > 1  # phrasings vary


def test_pairs_from_csv_with_case_folders_and_files_and_clear_errors(demo_pairs, tmp_path):
    from medseg.data.reports import read_pairs
    from medseg.errors import CaseError

    train = demo_pairs / "train"
    files = ";".join(str(p) for p in sorted((train / "BraTS2021_00001").glob("*.nii.gz")) if "seg" not in p.name)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f'case,image,report,site\n{train / "BraTS2021_00000"},,first report,a\n,"{files}",second,b\n')
    pairs = read_pairs(csv_path)
    assert [p["case_id"] for p in pairs] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert [p["labels"] for p in pairs] == [{"site": "a"}, {"site": "b"}]
    assert all(len(p["image"]) == 4 and "label" not in p for p in pairs)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"case_id": "BraTS2021_00000", "report": "ok"}\n{"case_id": "BraTS2021_09999", "report": "x"}\n')
    with pytest.raises(CaseError, match=r"BraTS2021_09999.*line 2: not in the dataset"):
        read_pairs(bad, data_dir=train)
    bad.write_text('{"case_id": "BraTS2021_00000"}\n')
    with pytest.raises(CaseError, match="line 1: no report text"):
        read_pairs(bad, data_dir=train)


def tiny_fit_args(demo_pairs: Path, run: Path) -> list[str]:
    return [
        "fit", "--config", str(ROOT / "configs" / "clip_demo.yaml"),
        "--data.init_args.reports", str(demo_pairs / "train" / "reports.jsonl"),
        "--data.init_args.val_reports", str(demo_pairs / "test" / "reports.jsonl"),
        "--data.init_args.roi_size", "[16, 16, 16]", "--data.init_args.batch_size", "3",
        "--model.init_args.image_encoder.img_size", "[16, 16, 16]",
        "--model.init_args.image_encoder.hidden_size", "16", "--model.init_args.image_encoder.mlp_dim", "32",
        "--model.init_args.image_encoder.num_layers", "1", "--model.init_args.image_encoder.num_heads", "2",
        "--model.init_args.image_encoder.embed_dim", "8", "--model.init_args.text_encoder.embed_dim", "8",
        "--model.init_args.text_encoder.width", "16", "--model.init_args.text_encoder.layers", "1",
        "--model.init_args.text_encoder.heads", "2",
        "--trainer.max_steps", "2", "--trainer.max_time", "null", "--trainer.check_val_every_n_epoch", "1",
        "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(run),
    ]  # fmt: skip


def test_cli_fit_tiny_then_zero_shot(demo_pairs, tmp_path, capsys):
    from medseg.cli import main
    from medseg.commands.zero_shot import main as zero_shot
    from medseg.inference.checkpoint import load_checkpoint
    from medseg.modules.clip import ClipModule

    run = tmp_path / "run"
    assert main(tiny_fit_args(demo_pairs, run)) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2
    assert (run / "checkpoints" / "tokenizer.json").is_file()
    metrics = (next(run.rglob("metrics.csv"))).read_text(encoding="utf-8").splitlines()[0]
    for name in (
        "train/loss",
        "val/i2t_recall@1",
        "val/t2i_recall@10",
        "val/zs_enhancing_auroc",
        "val/zs_hemisphere_acc",
    ):
        assert name in metrics

    module, data = load_checkpoint(ckpt, ClipModule)
    assert module.text_encoder.tokenizer_fitted
    assert tuple(data["roi_size"]) == (16, 16, 16)
    capsys.readouterr()
    code = zero_shot(
        [str(demo_pairs / "test"), "--ckpt", str(ckpt), "--classes", "enhancing tumour", "no enhancing tumour"]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and "enhancing tumour" in lines[0] and len(lines) == 3
    probs = [float(v) for v in lines[1].split()[1:]]
    assert len(probs) == 2 and math.isclose(sum(probs), 1.0, abs_tol=2e-3)

    (tmp_path / "prompts.json").write_text(json.dumps({"left": ["left lesion"], "right": "right lesion"}))
    assert zero_shot([str(demo_pairs / "test" / "BraTS2021_00050"), "--ckpt", str(ckpt), "--prompts",
                      str(tmp_path / "prompts.json")]) == 0  # fmt: skip
    assert (
        main(["zero-shot", str(demo_pairs / "test"), "--ckpt", str(tmp_path / "none.ckpt"), "--classes", "a", "b"]) == 1
    )
    assert "none.ckpt" in capsys.readouterr().err


@pytest.mark.slow
def test_lightning_ddp_fit_with_two_cpu_processes(demo_pairs, tmp_path):
    """Lightning DDP (gloo, 2 CPU processes): tokenizer shared from rank 0, gathered loss,
    validation over both ranks."""
    import subprocess
    import sys

    run = tmp_path / "run"
    args = [*tiny_fit_args(demo_pairs, run), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
            "--trainer.strategy", "ddp", "--data.init_args.batch_size", "2"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "medseg.cli", *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert "val/i2t_recall@1" in next(run.rglob("metrics.csv")).read_text(encoding="utf-8")
