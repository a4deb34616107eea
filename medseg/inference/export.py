"""``medseg export``: a trained segmentation network as ONNX or TorchScript, checked against PyTorch.

Both formats are made by tracing at the sliding-window size (``roi_size``): Swin UNETR's window
partitioning is data-dependent Python that TorchScript cannot script, while a trace at a fixed window
size is exact for every window sliding-window inference feeds it. The batch axis stays dynamic in ONNX.

Beside ``model.onnx`` / ``model.pt`` goes ``<file>.json``: roi, window overlap and blending, threshold,
the task (channels, labels, regions or classes) and resampling, so ``medseg predict --ckpt model.onnx``
segments exactly as the checkpoint.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.io import atomic_path, write_atomic
from medseg.tasks import task_for_checkpoint

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SETTINGS = ("roi_size", "sw_overlap", "sw_mode", "sw_batch_size", "threshold")


def metadata_path(model: Path) -> Path:
    return model.with_name(model.name + ".json")


def export(checkpoint: str | Path, out: str | Path, fmt: str = "onnx", seed: int = 0) -> float:
    """Export the network of ``checkpoint`` to ``out``; returns the max abs difference to PyTorch."""
    from medseg.inference.checkpoint import load_checkpoint
    from medseg.modules.segmentation import SegmentationModule

    module, data = load_checkpoint(checkpoint, SegmentationModule)
    task = task_for_checkpoint(data)
    roi = tuple(int(s) for s in module.hparams.roi_size)
    sample = torch.randn(1, task.in_channels, *roi, generator=torch.Generator().manual_seed(seed))  # [1, C, *roi]
    net = module.net.eval()
    with torch.no_grad():
        reference = net(sample).numpy()  # [1, R or K+1, *roi]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        # the trace is exact at this window size (module docstring), and the export is checked against
        # PyTorch below: the tracer's warnings about constants, and ONNX's about instance norm's train
        # flag (its statistics are per input either way), are nothing a user can act on
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
        if fmt == "onnx":
            torch.onnx.export(
                net, (sample,), str(tmp), dynamo=False, opset_version=17, input_names=["image"],
                output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            )  # fmt: skip
        else:
            torch.jit.save(torch.jit.trace(net, sample), str(tmp))
    exported = ExportedNet(out, roi)
    with torch.no_grad():
        difference = float(np.abs(exported(sample).numpy() - reference).max())
    metadata = {
        "format": fmt,
        "checkpoint": str(checkpoint),
        **{k: module.hparams[k] for k in SETTINGS},
        "label_convention": data.get("label_convention"),
        "task": task.to_dict(),
        "pixdim": data.get("pixdim"),
        "bias_field": data.get("bias_field"),
        "max_abs_difference": difference,
    }
    write_atomic(metadata_path(out), json.dumps(metadata, indent=1))
    return difference


class ExportedNet(nn.Module):
    """An exported network behind the ``nn.Module`` interface sliding-window inference expects.

    Takes windows of exactly ``img_size`` ([B, C, *img_size] -> logits [B, R or K+1, *img_size]); ONNX runs
    through onnxruntime on the CPU, TorchScript through torch.
    """

    def __init__(self, path: str | Path, img_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.path, self.img_size = Path(path), tuple(img_size)
        if self.path.suffix == ".onnx":
            import onnxruntime

            self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self.scripted = None
        else:
            self.session = None
            self.scripted = torch.jit.load(str(self.path), map_location="cpu")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.scripted is not None:
            return self.scripted(image)
        logits = self.session.run(None, {"image": image.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(logits).to(image.device)


def load_exported(path: str | Path):
    """A SegmentationModule around an exported network, and its data settings, from ``path`` + ``.json``."""
    from medseg.modules.segmentation import SegmentationModule

    path = Path(path)
    meta_path = metadata_path(path)
    if not path.is_file() or not meta_path.is_file():
        raise MedsegError(f"{path}: exported model or its {meta_path.name} not found (write both with medseg export)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    roi = tuple(meta["roi_size"])
    module = SegmentationModule(net=ExportedNet(path, roi), **{k: meta[k] for k in SETTINGS})
    data = {k: meta.get(k) for k in ("label_convention", "task", "pixdim", "bias_field")}
    return module.eval(), data
