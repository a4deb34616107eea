"""What each deep-supervision head of a Swin UNETR checkpoint predicts on one case (issue 13's CT collapse).

    .venv/bin/python scripts/ds_heads.py runs/ctdemo_ds3/run/checkpoints/last.ckpt runs/ctdemo_ds3/data

Preprocesses the case (``--case``, index into the dataset's cases, default 0) as `medseg predict` does, runs
``SwinUNETR.forward_deep`` on the roi-sized window at the volume's corner (zero-padded where the volume is
smaller), and prints for the full-resolution output and each lower-resolution head: its shape, how many
voxels each output wins (argmax for classes, above 0.5 for regions) and each output's highest probability;
for classes, also what the full-resolution output says where the head at 1/2 puts each class. A class that
the lower heads segment but the full-resolution output never predicts has been lost in the last decoder
stage. For classes, the last stage's features (``decoder1``'s output, what the 1x1 output convolution
reads) are then examined where the head at 1/2 puts each class: the channels positive on most of those
voxels (the rest sit on the LeakyReLU's negative side, slope 0.01, where the full-resolution loss reaches
the stage 100 times weaker), the output convolution's recall there, and the recall of a linear read-out
fitted on the same features (a class the read-out finds and the output convolution misses was separable,
but not learned).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import SpatialPad


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("data", help="a dataset medseg reads (the case is taken from its cases)")
    parser.add_argument("--case", type=int, default=0)
    args = parser.parse_args(argv)
    from medseg.data.layouts import read_dataset
    from medseg.inference import Predictor

    predictor = Predictor.from_checkpoint(args.ckpt, device="cpu")
    net, task = predictor.module.net, predictor.task
    if not getattr(net, "deep_supervision", 0):
        raise SystemExit(f"{args.ckpt}: this network has no deep-supervision heads")
    cases = read_dataset(args.data, task=task).cases
    if not 0 <= args.case < len(cases):
        parser.error(f"--case {args.case}: {args.data} has {len(cases)} case(s), numbered from 0")
    case = cases[args.case]
    image = predictor.transform(case)["image"].as_tensor()  # [C, X, Y, Z]
    roi = predictor.module.hparams.roi_size
    padded = SpatialPad(roi, method="end")(image)  # zeros past a volume smaller than the roi
    window = torch.as_tensor(padded)[None, :, : roi[0], : roi[1], : roi[2]]  # [1, C, *roi]
    features = {}
    hook = net.decoder1.register_forward_hook(lambda module, inputs, output: features.update(last=output))
    with torch.inference_mode():
        outputs = net.forward_deep(window)
    hook.remove()
    names = ("background", *task.outputs) if task.kind == "classes" else task.outputs
    print(f"{case['case_id']}, window {tuple(roi)} at the corner; outputs: {', '.join(names)}")
    for i, logits in enumerate(outputs):
        if task.kind == "classes":
            probs = logits.softmax(1)[0]
            wins = np.bincount(probs.argmax(0).flatten().numpy(), minlength=len(names))
        else:
            probs = logits.sigmoid()[0]
            wins = (probs > 0.5).flatten(1).sum(1).numpy()
        where = "full resolution" if i == 0 else f"head 1/{2**i}"
        print(f"{where} {tuple(logits.shape[2:])}: voxels won {wins.tolist()}, "
              f"highest probability {[round(float(p), 3) for p in probs.flatten(1).amax(1)]}")  # fmt: skip
    if task.kind == "classes" and len(outputs) > 1:
        print("where the head at 1/2 puts each class, what the full resolution says (voxels per output):")
        for name, said in zip(names, head_against_full(outputs[0], outputs[1])):
            print(f"  {name}: {said.tolist()}")
        last = features["last"][0].flatten(1).T.clone().as_subclass(torch.Tensor)  # [voxels, channels]
        head = head_at_full(outputs[1], outputs[0].shape[2:]).flatten()
        said = outputs[0].argmax(1).flatten()
        read_out = linear_read_out(last, head, len(names))
        print(f"the last stage's {last.shape[1]} channels where the head at 1/2 puts each class:")
        for c, name in enumerate(names):
            if (head == c).any():
                on = positive_channels(last[head == c])
                print(f"  {name}: positive channels {on}; output recall {recall(said, head, c):.3f}, "
                      f"linear read-out recall {recall(read_out, head, c):.3f}")  # fmt: skip


def head_against_full(full: torch.Tensor, half: torch.Tensor) -> np.ndarray:
    """Class logits at full resolution [1, K, *spatial] and at 1/2 [1, K, *spatial / 2] -> counts [K, K]:
    row c, what the full-resolution argmax says on the voxels where the head's argmax (taken at full
    resolution, nearest) is c."""
    said = full.argmax(1)[0]  # [*spatial]
    head = head_at_full(half, said.shape)
    classes = full.shape[1]
    return np.bincount((head * classes + said).flatten().numpy(), minlength=classes * classes).reshape(classes, -1)


def head_at_full(half: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A head's class logits [1, K, *spatial / 2] -> its argmax taken at full resolution [*shape] (nearest)."""
    return F.interpolate(half.argmax(1, keepdim=True).float(), size=shape, mode="nearest")[0, 0].long()


def positive_channels(features: torch.Tensor) -> list[int]:
    """features [voxels, channels] -> the channels above 0 on more than half of the voxels."""
    return torch.nonzero((features > 0).float().mean(0) > 0.5).flatten().tolist()


def recall(said: torch.Tensor, truth: torch.Tensor, c: int) -> float:
    """The share of the voxels where ``truth`` is class ``c`` that ``said`` also calls ``c``."""
    return float((said[truth == c] == c).float().mean())


def linear_read_out(features: torch.Tensor, classes: torch.Tensor, count: int, steps: int = 300) -> torch.Tensor:
    """A linear classifier fitted by class-balanced cross-entropy (Adam, seeded) to features [voxels,
    channels] and classes [voxels]; returns its argmax per voxel: what a 1x1 output convolution on these
    features could say."""
    generator = torch.Generator().manual_seed(0)
    weight = (0.01 * torch.randn(count, features.shape[1], generator=generator)).requires_grad_()
    bias = torch.zeros(count, requires_grad=True)
    balance = 1.0 / torch.bincount(classes, minlength=count).clamp(min=1).float()
    optimizer = torch.optim.Adam([weight, bias], lr=0.1)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(features @ weight.T + bias, classes, weight=balance).backward()
            optimizer.step()
    return (features @ weight.T + bias).argmax(1).detach()


if __name__ == "__main__":
    main()
