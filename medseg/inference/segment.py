"""Whole-scan segmentation with a trained model: files in, label maps on the input's own grid out.

``Predictor`` runs the same preprocessing as validation (RAS orientation, optional resampling, foreground
crop, normalisation by channel kind), sliding-window inference, then ``Invertd`` to undo crop, resampling
and orientation, so a label map has the input's exact shape and affine and overlays it in ITK-SNAP or
3D Slicer. The task the checkpoint was trained on (:mod:`medseg.tasks`) decides the channels it reads
and how outputs become labels: regions painted in the dataset's values (BraTS: 1, 2, 4), or the argmax
over classes written as each class's value.

>>> predictor = Predictor.from_checkpoint("runs/demo/checkpoints/last.ckpt")   # doctest: +SKIP
>>> result = predictor.predict_case({"case_id": "c1", "image": [t1, t1ce, t2, flair]})  # doctest: +SKIP
>>> result.label.shape, result.affine                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from medseg.data.transforms import eval_transforms
from medseg.devices import resolve_device
from medseg.errors import MedsegError
from medseg.inference.checkpoint import load_checkpoint
from medseg.io import case_output_name, read_header, reference_file, write_like
from medseg.modules.segmentation import SegmentationModule
from medseg.tasks import Task, get_task, task_for_checkpoint


@dataclass
class Prediction:
    """One case's result on the input grid.

    Attributes:
        case_id: the case.
        label: uint8 [X, Y, Z] label map in the dataset's own label values.
        probabilities: float32 [R, X, Y, Z] (sigmoid per region: TC, WT, ET for BraTS) or [K+1, X, Y, Z]
            (softmax over background and the classes), or None.
        affine: 4x4 voxel -> world (RAS mm) of the input.
        reference: the input file whose grid the arrays are on.
        preview: (image [C, X', Y', Z'], masks [N, X', Y', Z'] bool, one per region or foreground class) in
            the network's RAS, foreground-cropped space, for pictures; None unless asked for.
    """

    case_id: str
    label: np.ndarray
    probabilities: np.ndarray | None
    affine: np.ndarray
    reference: str
    preview: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def check_window(window: str | Sequence[int], net) -> str | tuple[int, int, int]:
    """``"auto"``, ``"roi"`` or three window sides a multiple of the network's size divisor."""
    any_size = hasattr(net, "size_divisor") and getattr(net, "img_size", None) is None
    if window == "auto":
        return "auto" if any_size and hasattr(net, "inference_bytes") else "roi"
    if window == "roi":
        return "roi"
    divisor = getattr(net, "size_divisor", 1)
    try:
        sides = tuple(int(s) for s in ([window] if isinstance(window, str) else window))
    except ValueError:
        sides = ()
    if len(sides) != 3 or any(s <= 0 or s % divisor for s in sides) or not any_size:
        shown = window if isinstance(window, str) else " ".join(str(s) for s in window)
        raise MedsegError(
            f"window {shown!r}: use auto, roi or three sides; "
            f"{type(net).__name__} takes windows of three sides, each a multiple of {divisor}"
            + ("" if any_size else " (this network takes only its roi_size: use --window roi)")
        )
    return sides


def largest_window(shape: Sequence[int], divisor: int, fits) -> tuple[int, int, int]:
    """The whole of ``shape`` rounded up to ``divisor`` if ``fits(voxels)``; else shrink its longest side
    by ``divisor`` until it does (never below ``divisor`` per side)."""
    window = [max(divisor, -(-int(s) // divisor) * divisor) for s in shape]
    while not fits(int(np.prod(window))) and max(window) > divisor:
        longest = int(np.argmax(window))
        window[longest] -= divisor
    return tuple(window)


def covers(window: Sequence[int], shape: Sequence[int]) -> bool:
    """Whether one window covers the whole volume."""
    return all(int(w) >= int(s) for w, s in zip(window, shape))


def available_memory(device: torch.device) -> int:
    """Bytes free for inference on ``device``: CUDA's free memory, or the system's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def model_task(checkpoint: str | Path) -> Task:
    """The task of a ``medseg fit`` checkpoint or of a model written by ``medseg export``, without building it."""
    from medseg.inference.checkpoint import checkpoint_task
    from medseg.inference.export import FORMATS, metadata_path

    path = Path(checkpoint)
    if path.suffix in FORMATS.values() and metadata_path(path).is_file():
        return task_for_checkpoint(json.loads(metadata_path(path).read_text(encoding="utf-8")))
    return checkpoint_task(path)


class Predictor:
    """Segment whole scans with a trained ``SegmentationModule``.

    Args:
        module: the trained module (its roi, overlap, blending and threshold are used unless overridden).
        label_convention: a preset whose label values to write instead of the task's (same regions).
        task: the training dataset's task (default: the brats2021 preset).
        pixdim: the resampling used in training (None: native grid).
        device: where the windows run: ``cpu``, ``cuda``, ``auto``.
        overlap, mode, sw_batch_size, stitch_device: sliding-window overrides.
        window: window size for inference. ``"roi"`` (default): the training roi_size, as validation
            does. ``"auto"``: for a network that takes any size (Swin UNETR), one pass over the whole
            head-cropped volume, padded to the network's size divisor, when its estimated memory fits
            80 % of what is free on the device, otherwise the largest window that fits, slid with
            ``overlap``: 1.5x faster on a BraTS-size case, but the network then normalises over a
            different extent than in training (up to 0.01 lower Dice on the demo model; see
            docs/benchmarks.md). Three ints: that window. On a GPU, when the volume does not fit an
            ``auto`` window, the windows run on the GPU and the volume and its stitched output stay in
            CPU memory.
        bf16: run the network under bfloat16 autocast (CPUs with AVX-512 BF16 or AMX, recent GPUs):
            faster at large feature sizes, logits within about 0.03 of float32 (docs/benchmarks.md).
    """

    def __init__(
        self,
        module: SegmentationModule,
        label_convention: str | None = None,
        pixdim: Sequence[float] | None = None,
        device: str = "auto",
        overlap: float | None = None,
        mode: str | None = None,
        sw_batch_size: int | None = None,
        stitch_device: str | None = None,
        window: str | Sequence[int] = "roi",
        bf16: bool = False,
        task: str | dict | Task | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        overrides = {
            "sw_overlap": overlap,
            "sw_mode": mode,
            "sw_batch_size": sw_batch_size,
            "stitch_device": stitch_device,
        }
        self.module.hparams.update({k: v for k, v in overrides.items() if v is not None})
        self.task = get_task(task or label_convention or "brats2021")
        if label_convention and task is not None:  # write another preset's values for the same regions
            target = get_task(label_convention)
            if tuple(target.outputs) != tuple(self.task.outputs):
                raise MedsegError(
                    f"label convention {target.name} has outputs {', '.join(target.outputs)}; the model was trained "
                    f"for {', '.join(self.task.outputs)} ({self.task.name})"
                )
            self.task = target
        self.module.set_task(self.task)
        self.convention = self.task
        self.transform = eval_transforms(self.task, pixdim, with_label=False)
        self.invert = Invertd(keys="pred", transform=self.transform, orig_keys="image", nearest_interp=False)
        self.window = check_window(window, self.module.net)
        self.bf16 = bool(bf16)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "auto", **overrides) -> Predictor:
        """From a ``medseg fit`` checkpoint, or from a file written by ``medseg export`` (.onnx / .pt + .json)."""
        from medseg.inference.export import FORMATS, load_exported

        exported = Path(checkpoint).suffix in FORMATS.values() and Path(f"{checkpoint}.json").is_file()
        module, data = load_exported(checkpoint) if exported else load_checkpoint(checkpoint, SegmentationModule)
        kwargs = {"task": task_for_checkpoint(data), "pixdim": data.get("pixdim")}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(module, device=device, **kwargs)

    @torch.inference_mode()
    def predict_case(self, case: dict, probabilities: bool = False, preview: bool = False) -> Prediction:
        """case {"case_id", "image": one path per channel of the task, or one 4-D path} -> Prediction."""
        data = self.transform(case)
        image = data["image"]  # [C, X', Y', Z'] RAS, cropped, normalised
        roi = self.window_for(image.shape[1:])
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.device.type != "cpu" and self.window == "auto" and not covers(roi, image.shape[1:]):
                # the volume does not fit the accelerator: windows run there,
                # the volume and its output stay in CPU memory
                logits = self.module.sliding_window(
                    image[None], roi_size=roi, sw_device=self.device, stitch_device="cpu"
                )
            else:
                logits = self.module.sliding_window(image[None].to(self.device), roi_size=roi)  # [1, N', X', Y', Z']
        logits = logits[0].float().cpu()  # N' = R regions or K+1 classes
        probs = torch.sigmoid(logits) if self.task.kind == "regions" else torch.softmax(logits, 0)  # [N', X', Y', Z']
        data["pred"] = MetaTensor(probs, meta=image.meta, applied_operations=image.applied_operations)
        restored = self.invert(data)["pred"].as_tensor()  # [N', X, Y, Z] on the input grid
        reference = reference_file(case)
        shape, affine = read_header(reference)
        if tuple(restored.shape[1:]) != tuple(shape[:3]):
            raise MedsegError(f"internal error: inverted prediction {tuple(restored.shape[1:])} != input {shape[:3]}")
        if self.task.kind == "regions":
            label = self.task.from_masks(restored > self.module.hparams.threshold).numpy()  # [X, Y, Z]
        else:
            label = self.task.from_class_index(restored.argmax(0)).numpy()  # [X, Y, Z]
        return Prediction(
            case_id=case["case_id"],
            label=label,
            probabilities=restored.numpy().astype(np.float32) if probabilities else None,
            affine=affine,
            reference=reference,
            preview=(image.numpy(), self.module.masks(logits[None])[0].numpy()) if preview else None,
        )

    def window_for(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """The window sliding-window inference uses on a preprocessed volume of ``shape`` (X, Y, Z)."""
        if self.window == "roi":
            return tuple(int(s) for s in self.module.hparams.roi_size)
        if self.window != "auto":
            return self.window
        net = self.module.net
        budget = int(available_memory(self.device) * 0.8)
        return largest_window(shape, net.size_divisor, lambda voxels: net.inference_bytes(voxels) <= budget)

    def predict(
        self, inputs: str | Path | Sequence[str | Path], out_dir: str | Path | None = None, probabilities: bool = False
    ) -> list[Prediction]:
        """Segment every case found in ``inputs`` (files or folders, as ``medseg predict`` takes them).

        Returns one :class:`Prediction` per case; with ``out_dir`` also writes ``<case>.nii.gz`` there (and
        ``<case>_prob.nii.gz`` with ``probabilities``), each atomically with the input's geometry.
        """
        from medseg.data.predict_inputs import find_predict_cases

        inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        results = []
        for case in find_predict_cases(inputs, self.task.channel_names):
            results.append(self.predict_case(case, probabilities=probabilities))
            if out_dir is not None:
                self.write(results[-1], out_dir)
        return results

    @staticmethod
    def write(result: Prediction, out_dir: str | Path) -> Path:
        """``out_dir/<case>.nii.gz`` (and ``<case>_prob.nii.gz`` [X, Y, Z, N'] when the result has
        probabilities), on the input's grid, each written atomically; the label map last, as it marks the
        case done for a rerun."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if result.probabilities is not None:
            probs = np.moveaxis(result.probabilities, 0, -1)  # [X, Y, Z, N']
            write_like(probs, result.reference, out_dir / case_output_name(result.case_id, "_prob.nii.gz"), np.float32)
        return write_like(result.label, result.reference, out_dir / case_output_name(result.case_id))
