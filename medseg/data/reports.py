"""Image-report pairs: a JSONL or CSV of scans and report text, demo reports, and a datamodule for pairs.

A pairs file names each scan in one of three ways, plus its ``report`` text and optional ``labels``:

- ``case_id``: a case of the dataset at ``data_dir`` (any layout :func:`medseg.data.layouts.read_dataset`
  reads: BraTS 2021/2023, MSD, nnU-Net, datalist; ``data_dir`` defaults to the pairs file's folder);
- ``case``: a case folder (its modality files found as ``medseg predict`` finds them);
- ``image``: the modality files (a list, or in CSV one cell separated by ``;``) or one 4-D file.

JSONL, one pair a line::

    {"case_id": "BraTS2021_00012", "report": "Large enhancing mass in the left frontal lobe ...",
     "labels": {"hemisphere": "left", "enhancing": "yes"}}

CSV: a header row with ``report`` and one of ``case_id``/``case``/``image``; other columns become labels.
Relative paths are taken from ``data_dir`` or else the pairs file's folder. ``labels`` (strings) are only
used to score zero-shot classification.

Batches of :class:`ReportDataModule` (``monai.data.DataLoader`` collation)::

    image       float32 [B, 4, *roi_size]     RAS, head-cropped, channel-normalised, resized (or cropped)
    report      list[str] (B)
    case_id     list[str] (B)
    labels      dict[str, list[str]]          label name -> B values ("" where a pair has none)
    pair_index  long [B]                      row of the pair in its split
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from monai.data import DataLoader
from monai.transforms import Compose, EnsureTyped, Resized, ResizeWithPadOrCropd

from medseg.data.base import CaseDataModule
from medseg.data.layouts import DatasetIndex, read_dataset
from medseg.data.predict_inputs import find_predict_cases
from medseg.data.transforms import preprocessing
from medseg.errors import CaseError, LayoutError

# ------------------------------------------------------------------------------------------ demo reports


# ------------------------------------------------------------------------------------------ reading pairs


def read_pairs(
    path: str | Path,
    data_dir: str | Path | None = None,
    layout: str = "auto",
    datalist: str | None = None,
) -> list[dict]:
    """Pairs of a JSONL / CSV file as case dicts: ``case_id``, ``image`` (+ ``channel_order``), ``report``,
    ``labels`` (every pair the same keys, "" where missing) and ``pair_index``.

    ``case_id`` rows are looked up in ``read_dataset(data_dir, layout, datalist=datalist)``; ``data_dir``
    defaults to the file's folder. Every error names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: no such pairs file (expected a .jsonl or .csv of image-report pairs)")
    root = Path(data_dir) if data_dir is not None else path.parent
    rows = _read_rows(path)
    index: DatasetIndex | None = None
    by_id: dict[str, dict] = {}
    pairs = []
    for where, row in rows:
        report = row.get("report")
        if not isinstance(report, str) or not report.strip():
            raise CaseError(f"{where}: no report text (a non-empty 'report' field)", row.get("case_id"), path)
        if row.get("case_id") and not (row.get("case") or row.get("image")):
            if index is None:
                index = read_dataset(root, layout, datalist=datalist)
                by_id = {c["case_id"]: c for c in index.cases}
            case = by_id.get(row["case_id"])
            if case is None:
                example = ", ".join(sorted(by_id)[:3])
                raise CaseError(f"{where}: not in the dataset at {root} (it holds {len(by_id)} cases, e.g. {example})",
                                row["case_id"], path)  # fmt: skip
            case = {k: v for k, v in case.items() if k not in ("label", "fold")}
        elif row.get("case") or row.get("image"):
            case = _case_from_files(row, root, where, path)
        else:
            raise CaseError(f"{where}: names no scan: give 'case_id', 'case' (a folder) or 'image' (files)", path=path)
        labels = row.get("labels") or {}
        if not isinstance(labels, dict):
            raise CaseError(
                f"{where}: 'labels' must be an object of names to values, found {labels!r}", case["case_id"], path
            )
        pairs.append({**case, "report": report.strip(), "labels": {str(k): str(v) for k, v in labels.items()}})
    if not pairs:
        raise LayoutError(f"{path}: holds no pairs")
    names = sorted({name for pair in pairs for name in pair["labels"]})
    for i, pair in enumerate(pairs):
        pair["labels"] = {name: pair["labels"].get(name, "") for name in names}
        pair["pair_index"] = i
    return pairs


def _read_rows(path: Path) -> list[tuple[str, dict]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "report" not in reader.fieldnames:
                raise LayoutError(f"{path}: a pairs CSV needs a header with 'report' and 'case_id', 'case' or 'image'")
            known = {"report", "case_id", "case", "image"}
            rows = []
            for line, raw in enumerate(reader, 2):
                row = {k: v.strip() for k, v in raw.items() if k in known and v}
                if "image" in row and ";" in row["image"]:
                    row["image"] = [p.strip() for p in row["image"].split(";") if p.strip()]
                row["labels"] = {k: v for k, v in raw.items() if k not in known and k and v}
                rows.append((f"line {line}", row))
            return rows
    rows = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise LayoutError(f"{path}: line {line} is not JSON ({e.msg}); expected one pair object per line") from None
        if not isinstance(row, dict):
            raise LayoutError(f"{path}: line {line} is not a JSON object with 'report' and a scan")
        rows.append((f"line {line}", row))
    return rows


def _case_from_files(row: dict, root: Path, where: str, source: Path) -> dict:
    given = row.get("case") or row.get("image")
    paths = [given] if isinstance(given, str) else given
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise CaseError(f"{where}: 'image' must be a path or a list of paths, found {given!r}", path=source)
    resolved = [p if Path(p).is_absolute() else str(root / p) for p in paths]
    try:
        cases = find_predict_cases(resolved)
    except (CaseError, LayoutError) as e:
        raise CaseError(f"{where}: {e}", row.get("case_id"), source) from None
    if len(cases) != 1:
        found = ", ".join(c["case_id"] for c in cases)
        raise CaseError(f"{where}: {given!r} holds {len(cases)} cases ({found}); a pair names one", path=source)
    case = {k: v for k, v in cases[0].items() if k not in ("label", "fold")}
    if row.get("case_id"):
        case["case_id"] = str(row["case_id"])
    return case


# ------------------------------------------------------------------------------------------ transforms


def pair_transforms(
    roi_size: Sequence[int],
    spatial_mode: Literal["resize", "crop"] = "resize",
    pixdim: Sequence[float] | None = None,
) -> Compose:
    """Preprocessing of ``medseg.data.transforms`` (RAS, optional resampling, head crop, normalisation), then
    ``resize`` of the head box to ``roi_size`` or a centred ``crop`` (padding where smaller). Deterministic:
    training augmentation runs on whole batches (:func:`augment_batch`)."""
    if spatial_mode not in ("resize", "crop"):
        raise ValueError(f"spatial_mode must be 'resize' or 'crop', got {spatial_mode!r}")
    size = tuple(int(s) for s in roi_size)
    fit = (
        Resized("image", spatial_size=size, mode="area")
        if spatial_mode == "resize"
        else ResizeWithPadOrCropd("image", size)
    )
    transforms = [*preprocessing("brats2021", pixdim, with_label=False), fit]  # no label: the convention is unused
    return Compose([*transforms, EnsureTyped("image", track_meta=False)])


def augment_batch(
    image: torch.Tensor, rotate: float = 0.1, scale: float = 0.08, translate: float = 0.05, intensity: float = 0.1
) -> torch.Tensor:
    """Random small affine (rotation up to ``rotate`` rad about each axis, scaling by up to ``scale``, shift up
    to ``translate`` of the half-width) and intensity scale/shift per channel, for a whole batch at once.

    image [B, C, X, Y, Z] -> [B, C, X, Y, Z]. Never flips: left and right are what reports talk about. One
    ``grid_sample`` for the batch costs a fraction of per-case MONAI ``RandAffined`` calls on CPU.
    """
    b, c = image.shape[:2]
    opts = {"device": image.device, "dtype": image.dtype}
    angles = (torch.rand(b, 3, **opts) * 2 - 1) * rotate  # [B, 3]
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones(b, **opts), torch.zeros(b, **opts)
    rx = torch.stack([one, zero, zero, zero, cos[:, 0], -sin[:, 0], zero, sin[:, 0], cos[:, 0]], -1).view(b, 3, 3)
    ry = torch.stack([cos[:, 1], zero, sin[:, 1], zero, one, zero, -sin[:, 1], zero, cos[:, 1]], -1).view(b, 3, 3)
    rz = torch.stack([cos[:, 2], -sin[:, 2], zero, sin[:, 2], cos[:, 2], zero, zero, zero, one], -1).view(b, 3, 3)
    zoom = 1 + (torch.rand(b, 3, **opts) * 2 - 1) * scale  # [B, 3]
    theta = torch.cat([rz @ ry @ rx @ torch.diag_embed(zoom), (torch.rand(b, 3, 1, **opts) * 2 - 1) * translate], 2)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)  # [B, X, Y, Z, 3]
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # [B, C, X, Y, Z]
    factor = 1 + (torch.rand(b, c, 1, 1, 1, **opts) * 2 - 1) * intensity  # [B, C, 1, 1, 1]
    offset = (torch.rand(b, c, 1, 1, 1, **opts) * 2 - 1) * intensity
    return out * factor + offset


# ------------------------------------------------------------------------------------------ datamodule


class ReportDataModule(CaseDataModule):
    step_seeded = False  # a plain shuffled stream

    # The typed argument list is repeated in every datamodule: LightningCLI reads each class's own signature.
    def __init__(
        self,
        reports: str,
        data_dir: str | None = None,
        layout: str = "auto",
        datalist: str | None = None,
        val_reports: str | None = None,
        val_fraction: float = 0.1,
        roi_size: tuple[int, int, int] = (32, 32, 32),
        spatial_mode: Literal["resize", "crop"] = "resize",
        pixdim: tuple[float, float, float] | None = None,
        augment: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        cache: Literal["none", "memory", "disk"] = "memory",
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            reports: JSONL or CSV of training pairs (see the module docstring).
            data_dir: dataset the pairs' ``case_id`` and relative paths refer to (default: the file's folder).
            layout: layout of ``data_dir`` (``auto``, ``brats2021``, ``brats2023``, ``msd``, ``nnunet``, ``datalist``).
            datalist: a datalist JSON for ``data_dir``.
            val_reports: a second pairs file to validate on (same ``data_dir``, or paths of its own); without
                it a seeded ``val_fraction`` of ``reports`` is held out.
            val_fraction: share of pairs held out when no ``val_reports`` (0: none).
            roi_size: network input size [X, Y, Z]; multiples of 32 for Swin, of the patch for ViT.
            spatial_mode: ``resize`` the head box to ``roi_size`` (the whole head, as the report sees it), or
                ``crop`` it centrally (native resolution).
            pixdim: resample to this voxel spacing in mm first; None keeps the native grid.
            augment: random affine and intensity jitter of training batches, after they reach the device
                (:func:`augment_batch`; no flips).
            batch_size: pairs per step; every other pair of the batch is a negative.
            num_workers: DataLoader worker processes.
            cache: ``memory``, ``disk`` (in ``cache_dir``) or ``none``: caches the deterministic transforms.
            cache_dir: folder for ``cache: disk``.
            seed: seed of the train/validation split.
        """
        super().__init__()

    def _read(self) -> list[dict]:
        h = self.hparams
        return read_pairs(h.reports, h.data_dir, h.layout, h.datalist)

    def _split(self, pairs: list[dict]) -> dict[str, list[dict]]:
        """``val_reports`` validates if given, else a seeded ``val_fraction``; ``pair_index`` counts within a split."""
        h = self.hparams
        if h.val_reports:
            splits = {"train": pairs, "val": read_pairs(h.val_reports, h.data_dir, h.layout, h.datalist)}
        else:
            splits = super()._split(pairs)
        for split in splits.values():
            for i, pair in enumerate(split):
                pair["pair_index"] = i
        return splits

    def train_reports(self) -> list[str]:
        """Report texts of the training pairs (what a from-scratch tokenizer is fitted on)."""
        self.setup("fit")
        return [pair["report"] for pair in self.splits["train"]]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            batch["image"] = augment_batch(batch["image"])
        return batch

    def transform(self, train: bool) -> Compose:
        """Deterministic for training too: augmentation runs on whole batches on the device."""
        return pair_transforms(self.hparams.roi_size, self.hparams.spatial_mode, self.hparams.pixdim)

    def _drop_last(self, n_train: int) -> bool:
        return n_train > self.hparams.batch_size  # a last batch of 1 pair has no negatives

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.splits["val"]) if self.splits["val"] else []

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()
