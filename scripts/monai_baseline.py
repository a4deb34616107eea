"""A plain MONAI training loop on a BraTS-layout folder: the baseline medseg's default recipe is judged against.

    python scripts/monai_baseline.py --train demo_hard/train --test demo_hard/test --out runs/baseline \
        --steps 280 --lr 3e-3 --seed 0
    .venv/bin/medseg evaluate --pred runs/baseline/pred --label demo_hard/test

What MONAI's BraTS tutorial does, nothing of medseg's: ``LoadImaged`` (the four modalities and the
label), ``ConvertToMultiChannelBasedOnBratsClassesd`` (TC, WT, ET; ``--et-label`` 4 for BraTS 2021),
RAS orientation, ``CropForegroundd``, ``NormalizeIntensityd(nonzero, channel_wise)``, uniform random crops
of ``--roi`` (``RandSpatialCropd``), flips on each axis and intensity jitter; stock
``monai.networks.nets.SwinUNETR`` (``--feature-size``), ``DiceLoss(sigmoid=True)``, AdamW at a constant
``--lr`` for ``--steps`` steps, batch 1. Then ``sliding_window_inference`` (roi, overlap 0.25) on each test
case, sigmoid > 0.5, painted back to BraTS 2021 labels (WT 2, TC 1, ET 4) and inverted to the input grid
with ``Invertd``, written as ``<case>.nii.gz`` so that ``medseg evaluate`` scores both paths the same way.
Steps are fixed (and printed with the time they took), so a run is reproducible; time per step says
what fits a wall-time budget on the machine at hand. The trained weights go to ``OUT/model.pt``;
``--weights OUT/model.pt`` predicts another held-out folder with them instead of training.

``--bias-field n4`` adds the one piece of medseg it borrows: the N4 bias-field correction that ``medseg fit``
does by default (``medseg.data.bias_field``, after the orientation, in training and prediction alike), to
tell what the preprocessing is worth from what the rest of the recipe is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.networks.nets import SwinUNETR
from monai.transforms import (
    Compose,
    ConvertToMultiChannelBasedOnBratsClassesd,
    CropForegroundd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)
from monai.utils import set_determinism

from medseg.data.bias_field import BiasFieldCorrectiond

MODALITIES = ("t1", "t1ce", "t2", "flair")


def cases(folder: Path, with_label: bool) -> list[dict]:
    """BraTS 2021 folders: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``."""
    out = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        item = {"image": [str(case / f"{case.name}_{m}.nii.gz") for m in MODALITIES], "case_id": case.name}
        if with_label:
            item["label"] = str(case / f"{case.name}_seg.nii.gz")
        out.append(item)
    return out


def train_loop(net: torch.nn.Module, loader: DataLoader, steps: int, lr: float) -> None:
    """``steps`` AdamW steps (constant ``lr``) of ``DiceLoss(sigmoid=True)`` over ``loader``, batch by batch."""
    loss_fn = DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    step, start = 0, time.perf_counter()
    net.train()
    while step < steps:
        for batch in loader:
            label = batch["label"].float()
            loss = loss_fn(net(batch["image"]), label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 20 == 0:
                print(f"step {step}: loss {loss.item():.4f}", flush=True)
            if step >= steps:
                break
    train_time = time.perf_counter() - start
    print(f"trained {step} steps in {train_time:.0f} s ({train_time / max(step, 1):.2f} s/step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=280)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--roi", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--et-label", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bias-field", choices=["n4"], help="N4-correct every channel, as medseg fit does")
    parser.add_argument("--weights", type=Path, help="model.pt of an earlier run: predict --test only, no training")
    args = parser.parse_args()
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file")
    set_determinism(args.seed)
    torch.manual_seed(args.seed)

    keys = ["image", "label"]
    correct = [BiasFieldCorrectiond(keys="image", mr=[True] * 4)] if args.bias_field else []
    prepare = [
        LoadImaged(keys=keys, image_only=False),
        EnsureChannelFirstd(keys=keys),
        ConvertToMultiChannelBasedOnBratsClassesd(keys="label", et_label=args.et_label),
        Orientationd(keys=keys, axcodes="RAS", labels=None),
        *correct,
        CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ]
    train = Compose([
        *prepare,
        SpatialPadd(keys=keys, spatial_size=args.roi),
        RandSpatialCropd(keys=keys, roi_size=args.roi, random_size=False),
        *[RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in range(3)],
        RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
    ])  # fmt: skip
    # with the correction, each case's deterministic part is computed once (N4 takes seconds a case)
    train_cases = cases(args.train, True)
    dataset = CacheDataset(train_cases, train, progress=False) if args.bias_field else Dataset(train_cases, train)
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=0)
    net = SwinUNETR(in_channels=4, out_channels=3, feature_size=args.feature_size)

    if args.weights is not None:
        net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    else:
        train_loop(net, loader, args.steps, args.lr)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), args.out / "model.pt")

    test = Compose([
        LoadImaged(keys="image", image_only=False),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS", labels=None),
        *correct,
        CropForegroundd(keys="image", source_key="image", allow_smaller=True),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ])  # fmt: skip
    invert = Invertd(keys="pred", transform=test, orig_keys="image", nearest_interp=True)
    args.out.joinpath("pred").mkdir(parents=True, exist_ok=True)
    net.eval()
    for item in cases(args.test, False):
        data = test({"image": item["image"]})
        with torch.no_grad():
            probs = torch.sigmoid(sliding_window_inference(data["image"][None], args.roi, 1, net, overlap=0.25))[0]
        regions = probs > 0.5  # [3, X, Y, Z]: TC, WT, ET
        label = torch.zeros(regions.shape[1:], dtype=torch.uint8)
        for channel, value in ((1, 2), (0, 1), (2, 4)):  # WT -> 2, TC -> 1, ET -> 4
            label[regions[channel]] = value
        data["pred"] = MetaTensor(label[None].float(), meta=data["image"].meta,
                                  applied_operations=data["image"].applied_operations)  # fmt: skip
        restored = invert(data)["pred"][0].numpy().astype(np.uint8)
        reference = nib.load(item["image"][0])
        nib.save(nib.Nifti1Image(restored, reference.affine), str(args.out / "pred" / f"{item['case_id']}.nii.gz"))
    print(f"predictions: {args.out / 'pred'}")


if __name__ == "__main__":
    main()
