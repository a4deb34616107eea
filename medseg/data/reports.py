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
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import DataLoader
from monai.transforms import Compose, EnsureTyped, Resized, ResizeWithPadOrCropd

from medseg.data.base import CaseDataModule
from medseg.data.layouts import DatasetIndex, read_dataset
from medseg.data.predict_inputs import find_predict_cases
from medseg.data.transforms import preprocessing
from medseg.errors import CaseError, LayoutError
from medseg.io import write_atomic

REPORTS_FILE = "reports.jsonl"  # what write_demo_reports writes beside demo_truth.json

# ------------------------------------------------------------------------------------------ demo reports

_NOUNS = ("lesion", "mass", "tumour", "tumor")
_SIZE_WORDS = {"small": ("small",), "medium": ("medium-sized", "intermediate-sized"), "large": ("large", "bulky")}
_LOCATION = (
    "There is {a} {size} {noun} in the {side} {lobe} lobe, measuring about {ml} ml.",
    "{A} {size} {noun} ({ml} ml) is seen in the {lobe} lobe of the {side} hemisphere.",
    "{Side} {lobe} {noun}, {size}, approximately {ml} ml in volume.",
    "The {noun} lies in the {side} {lobe} lobe and is {size} (about {ml} ml).",
    "{A} {size} {side}-sided {lobe} {noun} is present, volume {ml} ml.",
)
_ENHANCEMENT = {
    True: (
        "It shows contrast enhancement.",
        "The {noun} enhances after gadolinium.",
        "There is avid enhancement on the post-contrast T1 images.",
        "Enhancing tumour is present.",
    ),
    False: (
        "There is no contrast enhancement.",
        "The {noun} does not enhance after gadolinium.",
        "No enhancing component is seen on post-contrast T1.",
        "It is non-enhancing.",
    ),
}
_CORE = {  # (enhancing, label 1 present): what label 1 looks like depends on enhancement
    (True, True): ("There is central necrosis.", "A necrotic centre is surrounded by an enhancing rim.",
                   "The {noun} has a necrotic core."),
    (True, False): ("No necrosis is seen.", "The enhancing core is solid, without necrosis.",
                    "There is no necrotic component."),
    (False, True): ("A solid non-enhancing core is present, without necrosis.",
                    "There is a non-enhancing tumour core; no necrosis."),
    (False, False): ("No solid tumour core or necrosis is seen; the abnormality is signal change only.",
                     "There is no necrosis and no solid core."),
}  # fmt: skip
_EDEMA = {
    "minimal": ("There is minimal surrounding edema.", "Little perilesional oedema.",
                "Only a thin rim of FLAIR hyperintensity surrounds it."),
    "moderate": ("There is moderate surrounding edema.", "Moderate perilesional oedema is present.",
                 "Moderate FLAIR hyperintensity surrounds the {noun}."),
    "extensive": ("There is extensive surrounding edema.", "Extensive vasogenic oedema is present.",
                  "Marked FLAIR hyperintensity extends widely around the {noun}."),
}  # fmt: skip
_HEADERS = ("", "", "Findings: ", "MRI brain: ")
_IMPRESSION = "Impression: {side} {lobe} {enh} {noun}."


def size_class(volume_ml: float, thresholds_ml: Sequence[float]) -> str:
    """``small`` below ``thresholds_ml[0]``, ``large`` from ``thresholds_ml[1]``, else ``medium``."""
    return "small" if volume_ml < thresholds_ml[0] else "large" if volume_ml >= thresholds_ml[1] else "medium"


def lesion_labels(lesion: dict, thresholds_ml: Sequence[float]) -> dict[str, str]:
    """Class labels of one demo lesion: what zero-shot prompts are scored against."""
    return {
        "hemisphere": lesion["hemisphere"],
        "lobe": lesion["lobe"],
        "enhancing": "yes" if lesion["enhancing"] else "no",
        "necrosis": "yes" if lesion["enhancing"] and lesion["necrotic"] else "no",
        "edema": lesion["edema_extent"],
        "size": size_class(lesion["volume_ml"], thresholds_ml),
    }


def demo_report(lesions: list[dict], rng: random.Random, thresholds_ml: Sequence[float]) -> str:
    """A report of a demo case's lesions (``demo_truth.json`` entries), phrased at random by ``rng``."""
    header = rng.choice(_HEADERS)
    if not lesions:
        return header + rng.choice(("No focal lesion is seen.", "No tumour is identified.", "Normal study."))
    parts = [] if len(lesions) == 1 else [f"There are {len(lesions)} lesions."]
    for number, lesion in enumerate(lesions, 1):
        noun, side = rng.choice(_NOUNS), lesion["hemisphere"]
        size = rng.choice(_SIZE_WORDS[size_class(lesion["volume_ml"], thresholds_ml)])
        article = "an" if size[0] in "aeiou" else "a"
        words = {"noun": noun, "side": side, "Side": side.capitalize(), "lobe": lesion["lobe"], "size": size,
                 "ml": f"{lesion['volume_ml']:.0f}", "a": article, "A": article.capitalize()}  # fmt: skip
        location = rng.choice(_LOCATION).format(**words)
        others = [
            rng.choice(_ENHANCEMENT[bool(lesion["enhancing"])]),
            rng.choice(_CORE[bool(lesion["enhancing"]), bool(lesion["necrotic"])]),
            rng.choice(_EDEMA[lesion["edema_extent"]]),
        ]
        others = [s.format(**words) for s in others]
        rng.shuffle(others)
        sentences = [location, *others] if rng.random() < 0.6 else rng.sample([location, *others], 4)
        prefix = f"Lesion {number}: " if len(lesions) > 1 else ""
        parts.append(prefix + " ".join(sentences))
    if rng.random() < 0.5:
        largest = max(lesions, key=lambda lesion: lesion["volume_ml"])
        enh = "enhancing" if largest["enhancing"] else "non-enhancing"
        parts.append(_IMPRESSION.format(side=largest["hemisphere"], lobe=largest["lobe"], enh=enh, noun=rng.choice(_NOUNS)))
    return header + " ".join(parts)


def volume_terciles(truth: dict) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles of the lesion volumes (ml) in a ``demo_truth.json`` mapping."""
    volumes = [lesion["volume_ml"] for entry in truth.values() for lesion in entry["lesions"]]
    if not volumes:
        return (0.0, float("inf"))
    low, high = np.quantile(volumes, [1 / 3, 2 / 3])
    return float(low), float(high)


def write_demo_reports(
    root: str | Path, seed: int = 0, size_thresholds_ml: Sequence[float] | None = None, filename: str = REPORTS_FILE
) -> Path:
    """Write ``root/reports.jsonl``: one report per demo case, from the case's own ``demo_truth.json``.

    Each report states, per lesion, hemisphere and lobe, size (a word and the volume in ml), enhancement or
    not, necrosis or not (or, without enhancement, a non-enhancing core or none), and the extent of edema,
    in varied phrasings (templates, synonyms, sentence order; an impression line half the time) drawn from
    ``(seed, case_id)``. Size words: ``small`` / ``medium`` / ``large`` split at ``size_thresholds_ml``
    (default: the terciles of this file's lesion volumes; pass the training set's to a held-out set).
    Each line also holds ``labels`` of the largest lesion (see :func:`lesion_labels`). Returns the path.
    """
    root = Path(root)
    truth_path = root / "demo_truth.json"
    if not truth_path.is_file():
        raise LayoutError(f"{root}: no demo_truth.json (write demo cases first: medseg demo-data --out {root})")
    truth = json.loads(truth_path.read_text())
    thresholds = tuple(size_thresholds_ml) if size_thresholds_ml is not None else volume_terciles(truth)
    lines = []
    for case_id in sorted(truth):
        lesions = truth[case_id]["lesions"]
        rng = random.Random(f"{seed}:{case_id}")
        line = {"case_id": case_id, "report": demo_report(lesions, rng, thresholds)}
        if lesions:
            line["labels"] = lesion_labels(max(lesions, key=lambda lesion: lesion["volume_ml"]), thresholds)
        lines.append(json.dumps(line))
    return write_atomic(root / filename, "\n".join(lines) + "\n")


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
            raise CaseError(f"{where}: 'labels' must be an object of names to values, found {labels!r}", case["case_id"], path)
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
    for line, text in enumerate(path.read_text().splitlines(), 1):
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
    fit = Resized("image", spatial_size=size, mode="area") if spatial_mode == "resize" else ResizeWithPadOrCropd("image", size)
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
