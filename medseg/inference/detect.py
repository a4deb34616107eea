"""``medseg detect``: lesion boxes in world coordinates from scans and a detection checkpoint.

A scan goes through the training preprocessing (RAS, head crop, normalisation, resize to the input
size); the network's normalised boxes are scaled to the preprocessed grid and mapped to world RAS mm
through that grid's affine (which the crop and reorientation kept in step with the input file), so they
are independent of how the input file stores its axes.

>>> detector = BoxDetector.from_checkpoint("runs/detr_demo/checkpoints/last.ckpt")  # doctest: +SKIP
>>> predict_boxes(detector, find_predict_cases(["scans/"]), "boxes/", mask_score=0.5)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medseg.boxes import (
    boxes_voxel_to_world,
    boxes_world_to_voxel,
    points_voxel_to_world,
)
from medseg.data.base import saved_roi_size
from medseg.data.detection import detection_transforms
from medseg.devices import resolve_device
from medseg.errors import find_medseg_error, unwrapped_medseg_errors
from medseg.inference.checkpoint import load_checkpoint
from medseg.io import (
    case_output_name,
    check_output_dir,
    check_output_target,
    read_header,
    reference_file,
    write_atomic,
    write_like,
)
from medseg.modules.detection import DetectionModule
from medseg.nets.detr import postprocess
from medseg.nets.pretrained import WeightsError


@dataclass
class CaseBoxes:
    """Boxes of one case, highest score first.

    Attributes:
        case_id: the case.
        boxes_mm: [P, 6] world RAS mm xyzxyz.
        scores: [P] object probability.
        labels: [P] class index.
        reference: the input file whose grid the mask is written on.
    """

    case_id: str
    boxes_mm: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    reference: str

    def to_json(self) -> dict:
        boxes = [
            {"box_mm": [round(float(v), 3) for v in box], "label": int(label), "score": round(float(score), 5)}
            for box, label, score in zip(self.boxes_mm, self.labels, self.scores)
        ]
        return {"case_id": self.case_id, "reference": self.reference, "space": "RAS", "unit": "mm", "boxes": boxes}


class BoxDetector:
    """Find lesion boxes in whole scans with a trained :class:`DetectionModule`.

    Args:
        module: the trained module.
        input_size: the size scans are resized to (the training datamodule's ``roi_size``).
        label_convention, pixdim: the training datamodule's (pixdim None: native grid).
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    def __init__(
        self,
        module: DetectionModule,
        input_size: Sequence[int],
        label_convention: str = "brats2021",
        pixdim: Sequence[float] | None = None,
        device: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.transform = detection_transforms(label_convention, input_size, pixdim, with_label=False)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "auto") -> BoxDetector:
        module, data = load_checkpoint(checkpoint, DetectionModule)
        roi_size = saved_roi_size(data)
        if roi_size is None:
            raise WeightsError(f"{checkpoint}: was not trained with a detection datamodule (no roi_size saved)")
        return cls(module, roi_size, data.get("label_convention") or "brats2021", data.get("pixdim"), device)

    @torch.inference_mode()
    def detect(self, case: dict) -> CaseBoxes:
        """case {"case_id", "image": modality paths (t1, t1ce, t2, flair) or one 4-D path} -> CaseBoxes."""
        with unwrapped_medseg_errors():  # a damaged scan: medseg's error naming the file, not MONAI's wrapper
            data = self.transform({k: v for k, v in case.items() if k != "label"})  # a label map is not needed
        image = torch.as_tensor(data["image"])[None].to(self.device)  # [1, 4, *input_size]
        pred = postprocess(self.module(image))[0]  # scores [Q], labels [Q], boxes [Q, 6] normalised
        shape = data["grid_shape"].numpy().astype(np.float64)  # [3]
        voxel = pred["boxes"].cpu().double().numpy() * np.concatenate([shape, shape])  # [Q, 6] voxel edges
        boxes_mm = boxes_voxel_to_world(voxel, data["grid_affine"].numpy())  # [Q, 6]
        return CaseBoxes(
            case["case_id"], boxes_mm, pred["scores"].cpu().numpy(), pred["labels"].cpu().numpy(), reference_file(case)
        )


def box_mask(boxes_mm: np.ndarray, reference: str) -> np.ndarray:
    """uint8 [X, Y, Z] on the grid of ``reference``: k where a voxel centre lies in box k (1-based; the
    earlier box wins where boxes overlap), 0 elsewhere; at most 255 boxes."""
    shape, affine = read_header(reference)
    shape = np.asarray(shape[:3])
    mask = np.zeros(shape, np.uint8)
    for k in range(min(len(boxes_mm), 255), 0, -1):
        box = np.asarray(boxes_mm[k - 1], dtype=np.float64)
        edges = boxes_world_to_voxel(box[None], affine)[0]  # [6] voxel edge coordinates holding the box
        lo = np.clip(np.floor(edges[:3]).astype(int), 0, shape)
        hi = np.clip(np.ceil(edges[3:]).astype(int), 0, shape)
        if (hi <= lo).any():
            continue
        index = np.moveaxis(np.indices(hi - lo), 0, -1) + lo  # [x, y, z, 3] voxels around the box
        world = points_voxel_to_world(index, affine)  # [x, y, z, 3] their centres in mm
        inside = ((world >= box[:3]) & (world <= box[3:])).all(-1)
        region = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        region[inside] = k
    return mask


def predict_boxes(
    detector: BoxDetector | str | Path,
    cases: Sequence[dict],
    out: str | Path,
    min_score: float = 0.05,
    mask_score: float | None = None,
    overwrite: bool = False,
) -> tuple[list[Path], list[str]]:
    """Write ``out/<case>.json`` (and ``out/<case>_boxes.nii.gz`` when ``mask_score`` is set) per case.

    Args:
        detector: a :class:`BoxDetector` or a checkpoint path.
        cases: case dicts (``medseg.data.predict_inputs.find_predict_cases``).
        out: output folder, created if missing.
        min_score: boxes scoring below it are left out of the JSON.
        mask_score: also write a box mask of the boxes scoring at least this; None: no mask.
        overwrite: redo cases whose JSON exists (else they are skipped).

    Returns:
        (JSON files written, one line per failed case). Errors other than a bad case propagate.
    """
    out = Path(out)
    check_output_target(out)  # before the model loads
    if not isinstance(detector, BoxDetector):
        detector = BoxDetector.from_checkpoint(detector)
    check_output_dir(out, list(cases))
    written, failures = [], []
    for case in tqdm(cases, desc="detect", unit="case", disable=None):
        target = out / case_output_name(case["case_id"], ".json")
        if target.exists() and not overwrite:
            continue
        try:
            result = detector.detect(case)
        except Exception as e:
            error = find_medseg_error(e)
            if error is None:
                raise
            failures.append(str(error))
            tqdm.write(f"medseg detect: skipped {case['case_id']}: {error}", file=sys.stderr)
            continue
        keep = result.scores >= min_score
        result = CaseBoxes(
            result.case_id, result.boxes_mm[keep], result.scores[keep], result.labels[keep], result.reference
        )
        if mask_score is not None:
            strong = result.boxes_mm[result.scores >= mask_score]
            write_like(
                box_mask(strong, result.reference),
                result.reference,
                out / case_output_name(case["case_id"], "_boxes.nii.gz"),
            )
        write_atomic(target, json.dumps(result.to_json(), indent=1))  # the JSON last: it marks the case done
        written.append(target)
    return written, failures
