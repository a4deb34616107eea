"""LightningModule for 3-D segmentation of any task (:mod:`medseg.tasks`) with any injected network.

The task comes from the datamodule at ``setup`` (``trainer.datamodule.task``; brats2021 without one) and
decides the loss and the metrics. Batch contract (from ``medseg.data.datamodule``), C input channels:

- training: ``image`` [B, C, *roi_size] float; ``label`` [B, R, *roi_size] 0/1 for a regions task (R
  regions, TC, WT, ET for BraTS) or [B, 1, *roi_size] class indices for a classes task;
- validation / test: ``image`` [1, C, X, Y, Z] whole foreground-cropped volume, ``label`` likewise;
  sliding-window inference at ``roi_size`` turns it into logits [1, R or K+1, X, Y, Z].

Loss: regions, soft Dice + BCE on sigmoids (``DiceBCELoss``); classes, soft Dice + cross-entropy on the
softmax (``DiceCELoss``); ``blob_weight`` adds a soft Dice per truth lesion (:mod:`medseg.losses.blob`).
Logged: ``train/loss``, ``train/dice``, ``train/bce`` (``train/ce``, ``train/blob``; ``train/ds``, the lower
resolutions' share of the loss, for a net with ``deep_supervision``: :mod:`medseg.losses.deep_supervision`);
``val/loss``, ``val/dice_<output>`` per region or foreground class (``val/dice_tc``, ``val/dice_liver``),
``val/dice_mean`` over them (+ ``val/hd95_*`` when ``val_hd95``), ``val/ece_<output>`` (expected calibration
error of the probabilities over the validation crop, :mod:`medseg.metrics.calibration`); the same under ``test/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytorch_lightning as pl
import torch
from monai.inferers import sliding_window_inference
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from medseg.errors import ConfigError
from medseg.losses import DiceBCELoss, DiceCELoss, deep_supervision_loss
from medseg.metrics.calibration import calibration_error
from medseg.metrics.segmentation import dice, hd95, metric_keys
from medseg.modules.finetune import drop_gradients, encoder_parameters, layer_decay_groups
from medseg.modules.hparams import save_hparams
from medseg.modules.schedule import warmup_cosine
from medseg.modules.tta import mirror_axes, mirrored_probabilities, to_logits
from medseg.nets.pretrained import load_pretrained
from medseg.tasks import Task, get_task


class SegmentationModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        roi_size: tuple[int, int, int] = (96, 96, 96),
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        optimizer: Literal["adamw", "sgd"] = "adamw",
        warmup_steps: float = 0.05,
        schedule: Literal["cosine", "constant"] = "cosine",
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        blob_weight: float = 0.0,
        squared_dice: bool | None = None,
        sw_batch_size: int = 1,
        sw_overlap: float = 0.25,
        sw_mode: Literal["constant", "gaussian"] = "constant",
        sw_device: str | None = None,
        stitch_device: str | None = None,
        threshold: float = 0.5,
        val_hd95: bool = False,
        pretrained: str | None = None,
        log_images: int = 2,
        tta: bool = False,
        tta_axes: tuple[int, ...] | None = None,
        freeze_encoder_steps: int = 0,
        layer_decay: float = 1.0,
    ) -> None:
        """
        Args:
            net: the network, [B, C, *roi] -> logits [B, R or K+1, *roi] (e.g. ``medseg.nets.SwinUNETR``): its
                in/out channels must match the task (checked at setup).
            roi_size: training crop and sliding-window size; every side a multiple of the network's
                ``size_divisor`` (32 for Swin UNETR).
            lr: peak learning rate.
            weight_decay: the optimizer's weight decay.
            optimizer: ``adamw`` (default) or ``sgd``: nnU-Net's SGD (momentum 0.99, Nesterov; nnU-Net's own
                ``lr`` is 1e-2). On the hard BraTS demo data it lost 0.023 mean Dice to AdamW at 380 steps
                (docs/benchmarks.md, thirteenth measurement).
            warmup_steps: linear warm-up length in optimizer steps, or as a fraction of all steps if < 1;
                cosine decay to 0 after it, at ``trainer.max_steps`` or where ``trainer.max_time`` runs out
                (``medseg.modules.schedule``).
            schedule: ``cosine`` (default): warm-up, then cosine decay to 0 at the end; ``constant``: warm-up,
                then ``lr`` to the end (MONAI's tutorial loops).
            dice_weight: weight of the soft Dice term of the loss.
            bce_weight: weight of the cross-entropy term (binary for regions, softmax for classes).
            blob_weight: weight of the blob Dice (:mod:`medseg.losses.blob`): a soft Dice per truth lesion, so
                small lesions count as much as large ones, as the lesion-wise scores do; 0 turns it off.
            squared_dice: the soft Dice's denominator sums squared probabilities; default (None): yes for regions
                (MONAI's BraTS reference), no for classes (MONAI's BTCV and nnU-Net's soft Dice). On the hard
                BraTS demo data the plain denominator lost 0.009 mean Dice (docs/benchmarks.md).
            sw_batch_size: windows per forward in sliding-window inference.
            sw_overlap: overlap of neighbouring windows (0 to <1).
            sw_mode: blending of overlapping windows: ``constant`` or ``gaussian``.
            sw_device: device the windows run on (default: the module's).
            stitch_device: device the whole-volume output is stitched on; ``cpu`` keeps large volumes off
                the GPU.
            threshold: probability above which a voxel belongs to a region (regions tasks).
            val_hd95: also compute HD95 during validation (slower; always on in test).
            pretrained: a starting point for the network, loaded before training: a ``medseg pretrain``, ``medseg
                fit`` or CLIP (Swin image encoder) checkpoint, the Swin UNETR authors' ``model_swinvit.pt``,
                MONAI's ``ssl_pretrained_weights.pth`` or a Swin UNETR state_dict
                (:mod:`medseg.nets.pretrained`); what was loaded and what stayed initialised is printed.
            log_images: how many validation cases to log as slice overlays to wandb (0: none, for data
                that must not leave the site).
            tta: validate and test on the mean probabilities of mirrored copies of each volume
                (:mod:`medseg.modules.tta`; 8 passes for regions, 4 for classes: slower); the loss is then
                computed on the logits of those probabilities.
            tta_axes: the spatial axes TTA mirrors (0 left-right, 1, 2 in RAS); default: all three for a
                regions task, 1 and 2 for a classes task (left and right organs must not swap).
            freeze_encoder_steps: leave the encoder (Swin UNETR's ``swinViT``) untouched for this many optimizer
                steps while the decoder adapts to it (:mod:`medseg.modules.finetune`).
            layer_decay: layer-wise learning-rate decay: the decoder at ``lr``, the deepest encoder stage at
                ``lr * layer_decay``, each stage below once more times it; 1 turns it off.
        """
        super().__init__()
        save_hparams(self)  # the net as its config when LightningCLI built it; left out when built in Python
        divisor = getattr(net, "size_divisor", 1)
        if len(roi_size) != 3 or any(int(s) % divisor for s in roi_size):
            raise ValueError(
                f"roi_size {tuple(roi_size)} does not fit {type(net).__name__}: "
                f"each side must be a multiple of {divisor}"
            )
        fixed = getattr(net, "img_size", None)  # networks built for one input size (UNETR)
        if fixed is not None and tuple(int(s) for s in roi_size) != tuple(int(s) for s in fixed):
            raise ValueError(
                f"roi_size {tuple(roi_size)} does not fit {type(net).__name__}: "
                f"it takes exactly {tuple(fixed)} (its img_size)"
            )
        self.net = net
        self.task = get_task("brats2021")
        self.loss = self.loss_for("regions")
        if pretrained:
            rank_zero_info(str(load_pretrained(self.net, pretrained)))
        self._frozen = encoder_parameters(net) if freeze_encoder_steps > 0 else []
        layer_decay_groups(net, lr, layer_decay)  # a network without a known encoder fails here, not after setup
        mirror_axes("regions", tta_axes)  # a wrong axis fails here, not after an epoch
        if optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"model.init_args.optimizer must be adamw or sgd, got {optimizer!r}")

    def setup(self, stage: str) -> None:
        """Take the task of the datamodule (when there is one) and check the network fits it."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        task = getattr(datamodule, "task", None)
        if task is not None:
            self.set_task(task)

    def set_task(self, task: str | dict | Task) -> None:
        """Use ``task``: the loss of its kind, its output names; a ``ValueError`` if the net does not fit it."""
        task = get_task(task)
        check_net(self.net, task)
        self.task = task
        self.loss = self.loss_for(task.kind)

    def loss_for(self, kind: str) -> nn.Module:
        """The loss of a ``regions`` or ``classes`` task from the hyperparameters (those an older checkpoint
        lacks at their defaults); ``squared_dice`` None leaves each loss its own denominator."""
        h = self.hparams
        squared = h.get("squared_dice")
        options = {} if squared is None else {"squared_pred": squared}
        loss = DiceBCELoss if kind == "regions" else DiceCELoss
        return loss(h.dice_weight, h.bce_weight, h.get("blob_weight", 0.0), **options)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, X, Y, Z] -> logits [B, R or K+1, X, Y, Z]."""
        return self.net(image)

    def masks(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [B, R or K+1, *spatial] -> bool masks [B, len(task.outputs), *spatial]: sigmoid above
        ``threshold`` per region, or the argmax as one mask per foreground class."""
        if self.task.kind == "regions":
            return torch.sigmoid(logits) > self.hparams.threshold
        index = logits.argmax(1)  # [B, *spatial]
        return torch.stack([index == k for k in range(1, logits.shape[1])], 1)

    def target_masks(self, label: torch.Tensor) -> torch.Tensor:
        """The batch's label as bool masks [B, len(task.outputs), *spatial] (see :meth:`masks`)."""
        if self.task.kind == "regions":
            return label.bool()
        return torch.stack([label[:, 0] == k for k in range(1, self.task.out_channels)], 1)

    def sliding_window(
        self,
        image: torch.Tensor,
        overlap: float | None = None,
        roi_size: Sequence[int] | None = None,
        sw_device: str | torch.device | None = None,
        stitch_device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Whole-volume logits [B, R or K+1, X, Y, Z] from windows of ``roi_size`` (default: the training roi);
        ``sw_device`` / ``stitch_device`` override the module's settings for this call."""
        return sliding_window_inference(
            image,
            roi_size=self.hparams.roi_size if roi_size is None else roi_size,
            sw_batch_size=self.hparams.sw_batch_size,
            predictor=self.net,
            overlap=self.hparams.sw_overlap if overlap is None else overlap,
            mode=self.hparams.sw_mode,
            sw_device=self.hparams.sw_device if sw_device is None else sw_device,
            device=self.hparams.stitch_device if stitch_device is None else stitch_device,
        )

    def probabilities(self, image: torch.Tensor, tta_axes: Sequence[int] = (), **window) -> torch.Tensor:
        """Whole-volume probabilities [B, R or K+1, X, Y, Z]: sigmoid per region or softmax over classes of
        :meth:`sliding_window` (``window``: its keyword arguments), averaged over the mirrored copies of
        ``image`` along ``tta_axes`` (none: one pass)."""
        return mirrored_probabilities(lambda x: self.sliding_window(x, **window), image, self.task.kind, tta_axes)

    def on_train_start(self) -> None:
        steps = self.hparams.freeze_encoder_steps
        if steps and self.global_step < steps:
            rank_zero_info(f"encoder frozen until step {steps} (model.init_args.freeze_encoder_steps)")

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self.hparams.freeze_encoder_steps and self.global_step == self.hparams.freeze_encoder_steps:
            rank_zero_info(f"step {self.global_step}: the encoder trains from now on")

    def on_after_backward(self) -> None:
        if self.global_step < self.hparams.freeze_encoder_steps:
            drop_gradients(self._frozen)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if getattr(self.net, "deep_supervision", 0):  # logits at full resolution, then 1/2, 1/4 ... of the roi
            outputs = self.net.forward_deep(batch["image"])
            logits, losses = outputs[0], deep_supervision_loss(self.loss, outputs, batch["label"])
        else:
            logits = self(batch["image"])  # [B, R or K+1, *roi]
            losses = self.loss(logits, batch["label"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(logits))
        return losses["loss"]

    def _evaluate(self, batch: dict, stage: str, with_hd95: bool) -> torch.Tensor:
        label = batch["label"]  # [1, R, X, Y, Z] regions or [1, 1, X, Y, Z] class indices
        if self.hparams.get("tta"):
            axes = mirror_axes(self.task.kind, self.hparams.get("tta_axes"))
            logits = to_logits(self.probabilities(batch["image"], axes), self.task.kind).to(label.device)
        else:
            logits = self.sliding_window(batch["image"]).to(label.device)  # [1, R or K+1, X, Y, Z]
        pred, truth = self.masks(logits), self.target_masks(label)  # [1, N, X, Y, Z] each, N outputs
        names = metric_keys(self.task.outputs)
        metrics = {f"{stage}/loss": self.loss(logits, label)["loss"]}
        scores = dice(pred, truth)[0]  # [N]
        metrics.update({f"{stage}/dice_{n}": s for n, s in zip(names, scores)})
        metrics[f"{stage}/dice_mean"] = scores.mean()
        probs = torch.sigmoid(logits) if self.task.kind == "regions" else torch.softmax(logits, 1)
        ece = calibration_error(probs[0].detach().float().cpu().numpy(), truth[0].cpu().numpy(), names, self.task.kind)
        calibration = {f"{stage}/{k}": v for k, v in ece.items()}  # over the whole validation crop
        self.log_dict(calibration, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        if with_hd95:
            spacing = _spacing(batch["image"])
            distances = hd95(pred, truth, spacing)[0]  # [N] mm
            metrics.update({f"{stage}/hd95_{n}": d for n, d in zip(names, distances)})
            metrics[f"{stage}/hd95_mean"] = distances.mean()
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=1, sync_dist=True, prog_bar=stage == "val")
        return pred

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = self._evaluate(batch, "val", self.hparams.val_hd95)
        if batch_idx < self.hparams.log_images:
            self._log_overlay(batch, pred, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test", with_hd95=True)

    def _log_overlay(self, batch: dict, pred: torch.Tensor, index: int) -> None:
        """A slice overlay (image, truth, prediction) to loggers that take images (wandb)."""
        log_image = getattr(self.logger, "log_image", None)
        if log_image is None or self.trainer.sanity_checking or self.global_rank != 0:
            return
        from medseg.reporting.overlays import overlay_grid

        truth = self.target_masks(batch["label"])[0]  # [N, X, Y, Z]
        picture = overlay_grid(batch["image"][0], truth, pred[0], names=self.task.outputs)
        case_id = batch.get("case_id", [f"case{index}"])[0]
        log_image(key=f"val/overlay_{index}", images=[picture], caption=[str(case_id)], step=self.global_step)

    def configure_optimizers(self):
        h = self.hparams
        groups = layer_decay_groups(self.net, h.lr, h.get("layer_decay", 1.0))
        if h.get("optimizer", "adamw") == "sgd":  # nnU-Net's
            optimizer = torch.optim.SGD(groups, lr=h.lr, weight_decay=h.weight_decay, momentum=0.99, nesterov=True)
        else:
            optimizer = torch.optim.AdamW(groups, lr=h.lr, weight_decay=h.weight_decay)
        constant = h.get("schedule", "cosine") == "constant"
        return warmup_cosine(optimizer, self.trainer, h.warmup_steps, constant=constant)


def check_net(net: nn.Module, task: Task) -> None:
    """A ``ConfigError`` (a ``ValueError``) naming the config key when the network's channels do not fit ``task``."""
    for attribute, wanted, what in (("in_channels", task.in_channels, "input channels"),
                                    ("out_channels", task.out_channels, "outputs")):  # fmt: skip
        found = _channels(net, attribute)
        if found is not None and found != wanted:
            kind = "one per region" if task.kind == "regions" else "background + one per class"
            detail = f"({', '.join(task.channel_names)})" if attribute == "in_channels" else f"({kind})"
            raise ConfigError(
                f"the network has {found} {what} but task {task.name} has {wanted} {detail}: "
                f"set model.init_args.net.init_args.{attribute}: {wanted} (medseg plan writes a config that fits)"
            )


def _channels(net: nn.Module, attribute: str) -> int | None:
    """The net's input or output channel count: a constructor argument it kept, else its first / last conv."""
    if hasattr(net, attribute):
        return int(getattr(net, attribute))
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Linear))]
    if not convs:
        return None
    conv = convs[0] if attribute == "in_channels" else convs[-1]
    return (
        int(conv.in_channels if attribute == "in_channels" else conv.out_channels)
        if hasattr(conv, "in_channels")
        else None
    )


def _spacing(image: torch.Tensor) -> Sequence[float] | None:
    """Voxel spacing in mm of a (batched) MetaTensor, None for a plain tensor."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return None
    affine = affine[0] if affine.ndim == 3 else affine
    return torch.linalg.norm(affine[:3, :3].float(), dim=0).tolist()
