"""ViT classifier: raw logits, metrics against independent ones, targets from each source, the CLI end to end."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from monai.networks.nets import ViT
from torch.utils.data import DataLoader

from medseg.cli import main
from medseg.data.classification import ClassificationDataModule
from medseg.data.demo import generate_dataset
from medseg.errors import CaseError, LayoutError
from medseg.modules.classification import ClassificationModule
from medseg.nets.vit import ViTClassifier

ROOT = Path(__file__).resolve().parents[2]
TINY = {"img_size": (32, 32, 32), "patch_size": (16, 16, 16), "hidden_size": 48, "mlp_dim": 96, "num_layers": 1,
        "num_heads": 4}  # fmt: skip


def tiny_vit(**kwargs) -> ViTClassifier:
    return ViTClassifier(in_channels=4, **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """6 cases, seed 3: 5 with a necrotic core and 1 without, 3 enhancing and 3 not."""
    root = tmp_path_factory.mktemp("demo") / "train"
    generate_dataset(root, 6, seed=3, shape=(32, 32, 32), p_enhancing=0.5)
    return root


def truth_flags(root: Path, key: str) -> dict[str, int]:
    truth = json.loads((root / "demo_truth.json").read_text(encoding="utf-8"))
    return {case_id: int(any(lesion[key] for lesion in t["lesions"])) for case_id, t in truth.items()}


def targets_of(data: ClassificationDataModule) -> dict[str, int]:
    return {c["case_id"]: c["target"] for c in data.splits["train"] + data.splits["val"]}


# ---------------------------------------------------------------------------------------------- network


def test_vit_classifier_returns_raw_logits_of_monais_vit():
    net = tiny_vit(num_classes=3).eval()
    with torch.no_grad():
        net.classification_head.bias.copy_(torch.tensor([4.0, -3.0, 0.0]))
    reference = ViT(in_channels=4, classification=True, num_classes=3, post_activation=None, **TINY).eval()
    reference.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(2, 4, 32, 32, 32)
    with torch.no_grad():
        logits = net(x)
        expected, _ = reference(x)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, expected)
    assert logits.abs().max() > 1, "no Tanh: logits leave [-1, 1]"


def test_module_refuses_monais_tuple_and_wrong_sizes():
    module = ClassificationModule(net=ViT(in_channels=4, classification=True, **TINY))
    with pytest.raises(TypeError, match="returned a tuple.*ViTClassifier"):
        module(torch.zeros(1, 4, 32, 32, 32))
    with pytest.raises(ValueError, match=r"built for img_size \(32, 32, 32\) but got an input of \(48, 48, 48\)"):
        ClassificationModule(net=tiny_vit())(torch.zeros(1, 4, 48, 48, 48))
    with pytest.raises(ValueError, match="has 3 outputs but the module's num_classes is 2"):
        ClassificationModule(net=tiny_vit(num_classes=3), num_classes=2)


# ---------------------------------------------------------------------------------------------- metrics


def _auroc(scores: list[float], labels: list[int]) -> float:
    """Mann-Whitney: share of (positive, negative) pairs ranked right, ties counting half."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def _validate(module: ClassificationModule, batches: list[dict]) -> dict:
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    return trainer.validate(module, DataLoader(batches, batch_size=None), verbose=False)[0]


def test_accuracy_and_auroc_match_independent_ones():
    torch.manual_seed(0)
    module = ClassificationModule(net=tiny_vit()).eval()
    batches = [{"image": torch.randn(3, 4, 32, 32, 32), "target": torch.tensor(t)} for t in ([0, 1, 1], [1, 0, 0])]
    logged = _validate(module, batches)
    with torch.no_grad():
        logits = torch.cat([module(b["image"]) for b in batches])  # [6, 2]
    target = torch.cat([b["target"] for b in batches]).tolist()
    scores = logits.softmax(1)[:, 1].tolist()
    assert logged["val/acc"] == pytest.approx(np.mean([int(s > 0.5) == y for s, y in zip(scores, target)]))
    assert logged["val/auroc"] == pytest.approx(_auroc(scores, target))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(target))
    assert logged["val/loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_auroc_of_a_single_class_split_is_nan_not_zero():
    module = ClassificationModule(net=tiny_vit()).eval()
    with pytest.warns(UserWarning, match="val/auroc is undefined.*class \\[0\\]"):
        logged = _validate(module, [{"image": torch.randn(2, 4, 32, 32, 32), "target": torch.tensor([1, 1])}])
    assert np.isnan(logged["val/auroc"]) and "val/acc" in logged


# ---------------------------------------------------------------------------------------------- targets


def _setup(data_dir, **kwargs) -> ClassificationDataModule:
    data = ClassificationDataModule(str(data_dir), roi_size=(32, 32, 32), val_fraction=0.34, **kwargs)
    data.setup("fit")
    return data


def test_targets_from_demo_truth(demo_data):
    for key in ("necrotic", "enhancing"):
        data = _setup(demo_data, target_source="demo_truth", target_key=key)
        assert targets_of(data) == truth_flags(demo_data, key)
    assert sorted(truth_flags(demo_data, "necrotic").values()) == [0, 1, 1, 1, 1, 1]


def test_targets_from_label_files(demo_data):
    data = _setup(demo_data, target_source="label", target_key="ET")
    expected = {}
    for case_id in truth_flags(demo_data, "enhancing"):
        label = np.asanyarray(nib.load(demo_data / case_id / f"{case_id}_seg.nii.gz").dataobj)
        expected[case_id] = int((label == 4).any())
    assert targets_of(data) == expected == truth_flags(demo_data, "enhancing")
    necrotic = _setup(demo_data, target_source="label", target_key="necrotic")
    assert targets_of(necrotic) == truth_flags(demo_data, "necrotic")
    with pytest.raises(ValueError, match="'core' is not a region or a brats2021 label.*'ET'.*'enhancing'"):
        _setup(demo_data, target_source="label", target_key="core")


def _datalist(path: Path, demo: Path, values: dict) -> Path:
    entries = []
    for case_id, value in values.items():
        entry = {"image": [f"{case_id}/{case_id}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]}
        if value is not None:
            entry["label_cls"] = value
        entries.append(entry)
    path.write_text(json.dumps({"training": entries}))
    return path


def test_targets_from_datalist(demo_data, tmp_path):
    ids = sorted(truth_flags(demo_data, "necrotic"))
    values = {ids[0]: 2, ids[1]: 0, ids[2]: True, ids[3]: None, ids[4]: 1, ids[5]: 0}  # no seg labels listed
    datalist = _datalist(tmp_path / "list.json", demo_data, values)
    data = _setup(demo_data, target_source="datalist", datalist=str(datalist), num_classes=3)
    assert targets_of(data) == {k: int(v) for k, v in values.items() if v is not None}
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape[1:] == (4, 32, 32, 32) and batch["target"].dtype == torch.long

    with pytest.raises(CaseError, match=rf"case {ids[0]}: target 2 from datalist key 'label_cls' is outside 0..1"):
        _setup(demo_data, target_source="datalist", datalist=str(datalist))
    _datalist(datalist, demo_data, {**values, ids[5]: "yes"})
    with pytest.raises(CaseError, match=rf"case {ids[5]}: .*list.json: training\[5\]: 'label_cls' must be an integer"):
        _setup(demo_data, target_source="datalist", datalist=str(datalist), num_classes=3)
    with pytest.raises(LayoutError, match="needs a datalist JSON, but the data was read as layout 'brats2021'"):
        _setup(demo_data, target_source="datalist")


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_fit_and_validate(demo_data, tmp_path):
    run = tmp_path / "run"
    net = [f"--model.init_args.net.init_args.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    args = [
        "--config", str(ROOT / "configs" / "vit_classifier_demo.yaml"),
        "--data.init_args.data_dir", str(demo_data),
        "--data.init_args.roi_size", "[32, 32, 32]",
        "--data.init_args.val_fraction", "0.5",
        *net,
        "--trainer.default_root_dir", str(run),
        "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run),
        "--trainer.check_val_every_n_epoch", "1",
        "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip
    assert main(["fit", *args, "--trainer.max_steps", "2"]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2
    metrics_csv = run / "lightning_logs" / "version_0" / "metrics.csv"
    metrics = metrics_csv.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "val/auroc", "val/loss"} <= set(metrics)
    assert main(["validate", *args, "--ckpt_path", str(ckpt)]) == 0
