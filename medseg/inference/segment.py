"""Whole-scan segmentation with a trained model: files in, label maps on the input's own grid out.

``Predictor`` runs the same preprocessing as validation (RAS orientation, optional resampling, foreground
crop, normalisation by channel kind), sliding-window inference, then ``Invertd`` to undo crop, resampling
and orientation, so a label map has the input's exact shape and affine and overlays it in ITK-SNAP or
3D Slicer. The task the checkpoint was trained on (:mod:`medseg.tasks`) decides the channels it reads
and how outputs become labels: regions painted in the dataset's values (BraTS: 1, 2, 4), or the argmax
over classes written as each class's value. Several models (an ensemble, :mod:`medseg.inference.ensemble`)
and mirrored copies of the scan (test-time augmentation, :mod:`medseg.modules.tta`) are averaged as
probabilities on the network's grid; post-processing (:mod:`medseg.inference.postprocess`) acts on the
masks on the input grid; a calibration (:mod:`medseg.inference.calibration`) rescales the probabilities
written and the uncertainty maps, never the labels.

>>> predictor = Predictor.from_checkpoint("runs/demo/checkpoints/last.ckpt")   # doctest: +SKIP
>>> result = predictor.predict_case({"case_id": "c1", "image": [t1, t1ce, t2, flair]})  # doctest: +SKIP
>>> result.label.shape, result.affine                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from torch import nn

from medseg.data.transforms import eval_transforms
from medseg.devices import resolve_device, resolve_precision
from medseg.errors import MedsegError, unwrapped_medseg_errors
from medseg.inference.calibration import calibrate, check_calibration, load_calibration, uncertainty
from medseg.inference.ensemble import load_ensemble
from medseg.inference.export import ExportedNet
from medseg.inference.postprocess import check_postprocess, load_postprocess, postprocess_masks
from medseg.inference.windows import (
    WindowPlan,
    available_memory,
    check_window,
    covers,
    largest_window,
    monai_plan,
    plan_windows,
)
from medseg.io import case_output_name, read_header, reference_file, write_like
from medseg.modules.segmentation import SegmentationModule
from medseg.modules.tta import mirror_axes, mirror_sets
from medseg.tasks import Task, get_task, task_for_checkpoint


@dataclass
class Prediction:
    """One case's result on the input grid.

    Attributes:
        case_id: the case.
        label: uint8 [X, Y, Z] label map in the dataset's own label values.
        probabilities: float32 [R, X, Y, Z] (sigmoid per region: TC, WT, ET for BraTS) or [K+1, X, Y, Z]
            (softmax over background and the classes), calibrated when the predictor has a calibration, or None.
        uncertainty: float32 [R, X, Y, Z] per-region entropy (bits), or [1, X, Y, Z] the classes' normalised
            entropy, from the (calibrated) probabilities; or None.
        affine: 4x4 voxel -> world (RAS mm) of the input.
        reference: the input file whose grid the arrays are on.
        preview: (image [C, X', Y', Z'], masks [N, X', Y', Z'] bool, one per region or foreground class) in
            the network's RAS, foreground-cropped space, for pictures; None unless asked for.
        windows: the first model's windows over the cropped volume, e.g. ``146 x 174 x 149 cropped: 8
            windows (2 x 2 x 2) of 96 x 96 x 96, 7.1 M voxels (plan), fp32``.
    """

    case_id: str
    label: np.ndarray
    probabilities: np.ndarray | None
    affine: np.ndarray
    reference: str
    preview: tuple[np.ndarray, np.ndarray] | None = None
    uncertainty: np.ndarray | None = None
    windows: str | None = None

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def model_task(checkpoint: str | Path) -> Task:
    """The task of a ``medseg fit`` checkpoint or of a model written by ``medseg export``, without building it."""
    from medseg.inference.checkpoint import checkpoint_task
    from medseg.inference.export import FORMATS, metadata_path

    path = Path(checkpoint)
    if path.suffix in FORMATS.values() and metadata_path(path).is_file():
        return task_for_checkpoint(json.loads(metadata_path(path).read_text(encoding="utf-8")))
    return checkpoint_task(path)


class Predictor:
    """Segment whole scans with one trained ``SegmentationModule``, or an ensemble of them.

    Each model's sliding-window logits become probabilities (sigmoid per region, softmax over classes) on
    the network's grid; with ``tta`` they are averaged over mirrored copies of the volume, then over the
    models; the mean is thresholded (regions) or argmaxed (classes) as one model's would be.

    Args:
        module: the trained module, or several (an ensemble: the same task and preprocessing); the first
            one's threshold is used; each keeps its roi, overlap and blending unless overridden.
        label_convention: a preset whose label values to write instead of the task's (same regions).
        task: the training dataset's task (default: the brats2021 preset).
        pixdim: the resampling used in training (None: native grid).
        bias_field: the bias-field correction used in training (``n4``; None: none), as the checkpoint stores.
        device: where the windows run: ``cpu``, ``cuda``, ``auto``.
        overlap, mode, sw_batch_size, stitch_device: sliding-window overrides.
        window: window size for inference. ``"roi"`` (default): the training roi_size, as validation
            does. ``"auto"``: for a network that takes any size (Swin UNETR), one pass over the whole
            head-cropped volume, padded to the network's size divisor, when its estimated memory fits
            80 % of what is free on the device, otherwise the largest window that fits, slid with
            ``overlap``: faster on large scans, but the network then normalises over another extent than
            in training (up to 0.25 lower Dice per region on hard held-out cases; docs/benchmarks.md).
            ``"plan"``: window side and count chosen per case from the cropped
            extent (:func:`medseg.inference.windows.plan_windows`): the fewest windows per axis no larger
            than ``max_window``, then the smallest sides (multiples of the network's size divisor) that cover
            the extent, within the memory budget of ``auto``; a network with a fixed input size falls back
            to ``roi``. Windows smaller than the roi cost 0.04-0.06 Dice per region in the same benchmark.
            Three ints: that window. On a GPU, when the volume does not fit an ``auto`` window,
            the windows run on the GPU and the volume and its stitched output stay in CPU memory.
        max_window: the largest window side ``plan`` may use, one int or three (default: each model's
            roi_size, also for a model trained with ``data.random_roi``: windows larger than the roi changed
            its labels too much, docs/benchmarks.md).
        precision: ``auto`` (default): bf16 where the device computes it fast (a CPU with AMX or a bf16
            GPU, :func:`medseg.devices.bf16_native`), else fp32; ``fp32``; or ``bf16``: the network under
            bfloat16 autocast, logits within about 0.03 of float32 and labels agreeing with it at Dice
            >= 0.99 per region on trained models, 1.5x faster at feature_size 48 with AMX
            (docs/benchmarks.md), slower on CPUs without it.
        bf16: the older switch for ``precision="bf16"``.
        tta: test-time augmentation by mirroring (:mod:`medseg.modules.tta`): ``2 ** len(tta_axes)``
            passes per model instead of one.
        tta_axes: the RAS axes to mirror (0 left-right, 1 anterior-posterior, 2 inferior-superior);
            default: all three for a regions task (8 passes), 1 and 2 for a classes task (4 passes: a
            left-right mirror would swap left and right organs).
        postprocess: a post-processing configuration (:mod:`medseg.inference.postprocess`), or a JSON file
            of one, applied to the masks on the input grid before they become the label map; None: none.
        calibration: temperatures (:mod:`medseg.inference.calibration`), or a JSON file of them, applied to
            the probabilities a prediction returns and to its uncertainty map (labels never change).
    """

    def __init__(
        self,
        module: SegmentationModule | Sequence[SegmentationModule],
        label_convention: str | None = None,
        pixdim: Sequence[float] | None = None,
        device: str = "auto",
        overlap: float | None = None,
        mode: str | None = None,
        sw_batch_size: int | None = None,
        stitch_device: str | None = None,
        window: str | Sequence[int] = "roi",
        bf16: bool = False,
        precision: str = "auto",
        max_window: int | Sequence[int] | None = None,
        task: str | dict | Task | None = None,
        tta: bool = False,
        tta_axes: Sequence[int] | None = None,
        postprocess: dict | str | Path | None = None,
        calibration: dict | str | Path | None = None,
        bias_field: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.modules = [m.to(self.device).eval() for m in ([module] if isinstance(module, nn.Module) else module)]
        self.module = self.modules[0]  # whose threshold decides (all share it when loaded as an ensemble)
        overrides = {
            "sw_overlap": overlap,
            "sw_mode": mode,
            "sw_batch_size": sw_batch_size,
            "stitch_device": stitch_device,
        }
        for m in self.modules:
            m.hparams.update({k: v for k, v in overrides.items() if v is not None})
        self.task = get_task(task or label_convention or "brats2021")
        if label_convention and task is not None:  # write another preset's values for the same regions
            target = get_task(label_convention)
            if tuple(target.outputs) != tuple(self.task.outputs):
                raise MedsegError(
                    f"label convention {target.name} has outputs {', '.join(target.outputs)}; the model was trained "
                    f"for {', '.join(self.task.outputs)} ({self.task.name})"
                )
            self.task = target
        for m in self.modules:
            m.set_task(self.task)
        self.convention = self.task
        try:
            self.transform = eval_transforms(self.task, pixdim, with_label=False, bias_field=bias_field)
        except ValueError as err:
            raise MedsegError(str(err)) from None
        self.invert = Invertd(keys="pred", transform=self.transform, orig_keys="image", nearest_interp=False)
        self.windows = [check_window(window, m.net) for m in self.modules]
        self.window = self.windows[0]
        self.max_window = None if max_window is None else _three(max_window)
        if precision == "auto" and any(isinstance(m.net, ExportedNet) for m in self.modules):
            precision = "fp32"  # an exported model runs as it was exported and checked (ONNX has no autocast)
        try:
            self.precision = resolve_precision("bf16" if bf16 else precision, self.device)
        except ValueError as err:
            raise MedsegError(str(err)) from None
        self.bf16 = self.precision == "bf16"
        try:
            self.tta_axes = mirror_axes(self.task.kind, tta_axes) if tta else ()
        except ValueError as err:
            raise MedsegError(str(err)) from None
        if isinstance(postprocess, (str, Path)):  # a file: errors name it
            self.postprocess = load_postprocess(postprocess, self.task.outputs)
        else:
            self.postprocess = check_postprocess(postprocess, self.task.outputs) if postprocess else None
        outputs, kind = self.task.outputs, self.task.kind
        if isinstance(calibration, (str, Path)):
            self.calibration = load_calibration(calibration, outputs, kind)
        else:
            self.calibration = check_calibration(calibration, outputs, kind) if calibration else None

    @property
    def passes(self) -> int:
        """Network passes over each case: models x mirrored copies."""
        return len(self.modules) * len(mirror_sets(self.tta_axes))

    def describe_passes(self) -> str:
        """``8 passes per case (tta x 4 on axes 1 2, 2 models)``."""
        n = len(self.modules)
        tta = f"tta x {2 ** len(self.tta_axes)} on axes {' '.join(map(str, self.tta_axes))}, " if self.tta_axes else ""
        return f"{self.passes} pass{'es' if self.passes > 1 else ''} per case ({tta}{n} model{'s' if n > 1 else ''})"

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "auto", **overrides) -> Predictor:
        """From a ``medseg fit`` checkpoint, or from a file written by ``medseg export`` (.onnx / .pt + .json)."""
        return cls.from_checkpoints([checkpoint], device=device, **overrides)

    @classmethod
    def from_checkpoints(cls, checkpoints: Sequence[str | Path], device: str = "auto", **overrides) -> Predictor:
        """An ensemble of ``medseg fit`` checkpoints and/or ``medseg export`` models; a MedsegError naming
        them when they do not share task, resampling and threshold (:mod:`medseg.inference.ensemble`)."""
        modules, data = load_ensemble(checkpoints)
        kwargs = {"task": task_for_checkpoint(data), "pixdim": data.get("pixdim"), "bias_field": data.get("bias_field")}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(modules, device=device, **kwargs)

    @torch.inference_mode()
    def predict_case(
        self, case: dict, probabilities: bool = False, preview: bool = False, uncertain: bool = False
    ) -> Prediction:
        """case {"case_id", "image": one path per channel of the task, or one 4-D path} -> Prediction (with
        ``probabilities``, ``uncertain`` also those arrays, calibrated when the predictor has a calibration)."""
        with unwrapped_medseg_errors():  # a damaged scan: medseg's error naming the file, not MONAI's wrapper
            data = self.transform(case)
        image = data["image"]  # [C, X', Y', Z'] RAS, cropped, normalised
        plans = [self.window_plan(image.shape[1:], m, w) for m, w in zip(self.modules, self.windows)]
        runs = zip(self.modules, self.windows, plans)
        probs = sum(self.model_probabilities(m, w, image, plan) for m, w, plan in runs)
        probs = probs / len(self.modules)  # [N', X', Y', Z'], N' = R regions or K+1 classes
        data["pred"] = MetaTensor(probs, meta=image.meta, applied_operations=image.applied_operations)
        restored = self.invert(data)["pred"].as_tensor()  # [N', X, Y, Z] on the input grid
        reference = reference_file(case)
        shape, affine = read_header(reference)
        if tuple(restored.shape[1:]) != tuple(shape[:3]):
            raise MedsegError(f"internal error: inverted prediction {tuple(restored.shape[1:])} != input {shape[:3]}")
        masks = self.masks(restored).numpy()  # [N, X, Y, Z] one per output
        if self.postprocess:
            voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
            masks = postprocess_masks(masks, self.task.outputs, voxel_ml, self.postprocess)
        if self.calibration and (probabilities or uncertain):
            restored = calibrate(restored, self.calibration, self.task.outputs, self.task.kind)
        return Prediction(
            case_id=case["case_id"],
            label=self.task.from_masks(masks).numpy(),  # [X, Y, Z]
            probabilities=restored.numpy().astype(np.float32) if probabilities else None,
            affine=affine,
            reference=reference,
            preview=(image.numpy(), self.masks(probs).numpy()) if preview else None,
            uncertainty=uncertainty(restored.numpy(), self.task.kind) if uncertain else None,
            windows=self.describe_windows(image.shape[1:], plans[0]),
        )

    def masks(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities [N', *spatial] -> bool masks [N, *spatial], one per output: above the threshold per
        region, or the argmax as one mask per foreground class."""
        if self.task.kind == "regions":
            return probs > self.module.hparams.threshold
        index = probs.argmax(0)  # [*spatial]
        return torch.stack([index == k for k in range(1, probs.shape[0])])

    @torch.inference_mode()
    def model_probabilities(
        self, module: SegmentationModule, window, image: torch.Tensor, plan: WindowPlan | None = None
    ) -> torch.Tensor:
        """One model's probabilities [N', X', Y', Z'] (CPU float32) on the preprocessed ``image`` [C, X', Y', Z'],
        averaged over the mirrored passes when TTA is on; over the windows of ``plan`` (default: planned here)."""
        plan = plan or self.window_plan(image.shape[1:], module, window)
        roi = plan.window
        # a volume that does not fit the accelerator: windows run there, the volume and output stay in CPU memory
        offload = self.device.type != "cpu" and window == "auto" and not covers(roi, image.shape[1:])
        sliding = {"roi_size": roi, "sw_device": self.device, "stitch_device": "cpu"} if offload else {"roi_size": roi}
        if window == "plan":
            sliding["overlap"] = plan.overlap  # per axis: exactly the planned windows
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            x = image[None] if offload else image[None].to(self.device)  # [1, C, X', Y', Z']
            probs = module.probabilities(x, self.tta_axes, **sliding)  # [1, N', X', Y', Z']
        probs = probs[0].float().cpu()
        return probs.as_tensor() if isinstance(probs, MetaTensor) else probs

    def window_for(
        self, shape: Sequence[int], module: SegmentationModule | None = None, window=None
    ) -> tuple[int, int, int]:
        """The window (X, Y, Z) sliding-window inference uses on a preprocessed volume of ``shape``, for
        ``module`` (default: the first) and its checked ``window`` setting."""
        return self.window_plan(shape, module, window).window

    def window_plan(self, shape: Sequence[int], module: SegmentationModule | None = None, window=None) -> WindowPlan:
        """The windows over a preprocessed volume of ``shape`` (:class:`medseg.inference.windows.WindowPlan`)
        for ``module`` (default: the first) and its checked ``window`` setting."""
        module = module or self.module
        window = self.windows[self.modules.index(module)] if window is None else window
        overlap = module.hparams.sw_overlap
        if window == "roi":
            return monai_plan(shape, [int(s) for s in module.hparams.roi_size], overlap)
        if window not in ("auto", "plan"):
            return monai_plan(shape, window, overlap)
        net = module.net
        budget = int(available_memory(self.device) * 0.8)
        memory = getattr(net, "inference_bytes", lambda voxels: 0)

        def fits(voxels: int) -> bool:
            return memory(voxels) <= budget

        if window == "auto":
            return monai_plan(shape, largest_window(shape, net.size_divisor, fits), overlap)
        largest = self.max_window or [int(s) for s in module.hparams.roi_size]
        return plan_windows(shape, largest, net.size_divisor, fits)

    def describe_windows(self, shape: Sequence[int], plan: WindowPlan | None = None) -> str:
        """``146 x 174 x 149 cropped: 8 windows (2 x 2 x 2) of 96 x 96 x 96, 7.1 M voxels (plan), fp32``: the
        first model's windows (``plan``, default: planned here) over a preprocessed volume of ``shape``, and
        the precision."""
        extent = " x ".join(str(int(s)) for s in shape)
        setting = self.window if isinstance(self.window, str) else "given"
        plan = plan or self.window_plan(shape)
        return f"{extent} cropped: {plan.describe()} ({setting}), {self.precision}"

    def predict(
        self,
        inputs: str | Path | Sequence[str | Path],
        out_dir: str | Path | None = None,
        probabilities: bool = False,
        uncertain: bool = False,
    ) -> list[Prediction]:
        """Segment every case found in ``inputs`` (files or folders, as ``medseg predict`` takes them).

        Returns one :class:`Prediction` per case; with ``out_dir`` also writes ``<case>.nii.gz`` there (and
        ``<case>_prob.nii.gz`` with ``probabilities``, ``<case>_uncertainty.nii.gz`` with ``uncertain``), each
        atomically with the input's geometry.
        """
        from medseg.data.predict_inputs import find_predict_cases

        inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        results = []
        for case in find_predict_cases(inputs, self.task.channel_names):
            results.append(self.predict_case(case, probabilities=probabilities, uncertain=uncertain))
            if out_dir is not None:
                self.write(results[-1], out_dir)
        return results

    @staticmethod
    def write(result: Prediction, out_dir: str | Path) -> Path:
        """``out_dir/<case>.nii.gz`` (and ``<case>_prob.nii.gz`` [X, Y, Z, N'] and
        ``<case>_uncertainty.nii.gz`` [X, Y, Z, R] when the result has them), on the input's grid, each written
        atomically; the label map last, as it marks the case done for a rerun."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if result.probabilities is not None:
            probs = np.moveaxis(result.probabilities, 0, -1)  # [X, Y, Z, N']
            write_like(probs, result.reference, out_dir / case_output_name(result.case_id, "_prob.nii.gz"), np.float32)
        if result.uncertainty is not None:
            maps = np.moveaxis(result.uncertainty, 0, -1)  # [X, Y, Z, R]
            name = case_output_name(result.case_id, "_uncertainty.nii.gz")
            write_like(maps, result.reference, out_dir / name, np.float32)
        return write_like(result.label, result.reference, out_dir / case_output_name(result.case_id))


def _three(sides: int | Sequence[int]) -> tuple[int, int, int]:
    """One side for every axis, or three."""
    values = [int(sides)] * 3 if isinstance(sides, (int, np.integer)) else [int(s) for s in sides]
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise MedsegError(f"max window {sides!r}: give one side or three, each a positive number of voxels")
    return tuple(values)
