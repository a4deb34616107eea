"""Shared fixtures: tiny synthetic volumes written to tmp_path; nothing is downloaded."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

MODALITIES = ("t1", "t1ce", "t2", "flair")
# A 1-layer stand-in for Swin UNETR in CLI tests: fits and predicts in seconds
TINY_NET = [
    "--model.init_args.net", "torch.nn.Conv3d",
    "--model.init_args.net.in_channels", "4",
    "--model.init_args.net.out_channels", "3",
    "--model.init_args.net.kernel_size", "3",
    "--model.init_args.net.padding", "same",
]  # fmt: skip


# LPS-stored, anisotropic, slightly rotated: what scanners write and what must survive predict untouched
def _lps_affine(degrees: float = 3.0, spacing=(0.9, 1.2, 2.5), origin=(90.0, 120.0, -60.0)) -> np.ndarray:
    t = np.deg2rad(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag(spacing)  # x, y flipped: LPS storage
    affine[:3, 3] = origin
    return affine


LPS_AFFINE = _lps_affine()


def load_script(name: str):
    """``scripts/<name>.py`` as a module (scripts are not a package), to test a benchmark's parts."""
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(name, root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save(path: Path, array: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def blob_label(shape=(24, 20, 12), seed: int = 0) -> np.ndarray:
    """A small nested tumour (BraTS 2021 values) inside a box of 'head'."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape) / 2 + rng.uniform(-1.5, 1.5, 3)
    r = np.sqrt(sum(((g - c) / (s / 6)) ** 2 for g, c, s in zip(grid, centre, shape)))
    label[r < 2.0] = 2
    label[r < 1.3] = 4
    label[r < 0.7] = 1
    return label


def write_case(root: Path, case_id: str, label: np.ndarray, affine=LPS_AFFINE, seed: int = 0) -> dict:
    """BraTS 2021 files whose t1, t1ce, t2 encode TC, WT, ET (1 + 9 x indicator) inside a head box, flair = head."""
    rng = np.random.default_rng(seed)
    head = np.zeros(label.shape, bool)
    head[2:-2, 2:-2, 1:-1] = True
    regions = [np.isin(label, (1, 4)), label > 0, label == 4]
    images = [(head * (1.0 + 9.0 * r)).astype(np.float32) for r in regions]
    images.append((head * (1.0 + 0.01 * rng.standard_normal(label.shape))).astype(np.float32))
    folder = root / case_id
    files = [save(folder / f"{case_id}_{m}.nii.gz", im, affine) for m, im in zip(MODALITIES, images)]
    seg = save(folder / f"{case_id}_seg.nii.gz", label, affine)
    return {"case_id": case_id, "image": [str(f) for f in files], "label": str(seg)}


@pytest.fixture
def tiny_case(tmp_path) -> dict:
    return write_case(tmp_path / "data", "BraTS2021_00001", blob_label())


def write_ct_dataset(root: Path, n: int = 3, shape=(28, 24, 12), datalist: bool = False, seed: int = 0) -> Path:
    """A tiny abdominal-CT-like dataset: one CT channel in HU (air -1000, body 40, bone 700), organs 'liver' (1,
    100 HU) and 'spleen' (2, 160 HU) as boxes, LPS and anisotropic; MSD layout (dataset.json), or with
    ``datalist`` a BTCV-style ``dataset_0.json`` with a validation section. Case ``n`` and later go to imagesTs."""
    rng = np.random.default_rng(seed)
    affine = _lps_affine(0.0, spacing=(1.5, 1.5, 4.0))
    entries = []
    for i in range(n):
        image = np.full(shape, -1000.0, np.float32)
        image[3:-3, 3:-3, :] = 40.0
        image[12:16, 16:20, :] = 700.0  # spine
        label = np.zeros(shape, np.uint8)
        x = int(rng.integers(4, 7))
        label[x : x + 7, 5:12, 2:9] = 1
        label[17:22, 6:10, 3:8] = 2
        image[label == 1], image[label == 2] = 100.0, 160.0
        image += rng.normal(0, 5, shape).astype(np.float32)
        save(root / "imagesTr" / f"abd{i:03d}.nii.gz", image.astype(np.int16), affine)
        save(root / "labelsTr" / f"abd{i:03d}.nii.gz", label, affine)
        entries.append({"image": f"imagesTr/abd{i:03d}.nii.gz", "label": f"labelsTr/abd{i:03d}.nii.gz"})
    labels = {"0": "background", "1": "liver", "2": "spleen"}
    if datalist:
        meta = {"modality": {"0": "CT"}, "labels": labels, "training": entries[1:], "validation": entries[:1]}
        (root / "dataset_0.json").write_text(json.dumps(meta))
    else:
        meta = {"name": "TinyAbdomen", "modality": {"0": "CT"}, "labels": labels, "training": entries, "test": []}
        (root / "dataset.json").write_text(json.dumps(meta))
    return root
