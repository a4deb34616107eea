"""LightningModule for 3-D lesion detection with a set-prediction network (DETR) and its set criterion.

Batch contract (from ``medseg.data.detection``): ``image`` [B, 4, *roi_size]; ``boxes`` list of B
[N_b, 6] normalised cxcyczwhd; ``labels`` list of B [N_b] int64; plus ``grid_affine``, ``grid_shape``,
``case_id`` (not used here).

Logged: ``train/loss``, ``train/loss_ce``, ``train/loss_bbox``, ``train/loss_giou``,
``train/cardinality_error``; ``val/loss*`` and, over the whole validation set, ``val/map_10``,
``val/map_25``, ``val/map_50`` (mAP at 3-D IoU 0.1, 0.25, 0.5) and ``val/froc`` (mean sensitivity at
1/8 ... 8 false positives per scan, IoU >= 0.1); the same under ``test/``. IoU is computed on normalised
boxes, which equals IoU on the preprocessed voxel grid. Under DDP the set metrics cover each process's
share of the scans.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from medseg.boxes import box_cxcyczwhd_to_xyzxyz
from medseg.metrics.detection import froc, mean_average_precision
from medseg.modules.hparams import save_hparams
from medseg.modules.schedule import warmup_cosine
from medseg.nets.detr import postprocess

LOGGED_LOSSES = ("loss", "loss_ce", "loss_bbox", "loss_giou", "cardinality_error")
MAP_THRESHOLDS = {"map_10": 0.1, "map_25": 0.25, "map_50": 0.5}


class DetectionModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        criterion: nn.Module,
        lr: float = 1e-4,
        lr_backbone: float = 1e-5,
        weight_decay: float = 1e-4,
        warmup_steps: float = 0.05,
        froc_iou: float = 0.1,
    ) -> None:
        """
        Args:
            net: image [B, 4, *roi_size] -> ``pred_logits`` [B, Q, K+1], ``pred_boxes`` [B, Q, 6] (+
                ``aux_outputs``), e.g. ``medseg.nets.detr.DETR3d``.
            criterion: (outputs, targets) -> dict of named losses with ``loss``, e.g.
                ``medseg.losses.detr.SetCriterion3d``; its ``n_classes`` must be the network's.
            lr: AdamW learning rate of everything but the backbone (DETR: 1e-4).
            lr_backbone: AdamW learning rate of ``net.backbone`` (DETR: 1e-5, for an ImageNet-trained
                ResNet; a backbone trained from scratch wants ``lr``).
            weight_decay: AdamW weight decay (DETR: 1e-4).
            warmup_steps: linear warm-up in optimizer steps, or a fraction of all steps if < 1; cosine
                decay to 0 after it.
            froc_iou: 3-D IoU at which a prediction hits a lesion in the FROC.
        """
        super().__init__()
        save_hparams(self)  # net and criterion as configs when LightningCLI built them; else left out
        net_classes, criterion_classes = getattr(net, "n_classes", None), getattr(criterion, "n_classes", None)
        if None not in (net_classes, criterion_classes) and net_classes != criterion_classes:
            raise ValueError(
                f"the network predicts {net_classes} classes but the criterion expects {criterion_classes}"
            )
        self.net, self.criterion = net, criterion
        self._outputs: list[dict] = []

    def forward(self, image: torch.Tensor) -> dict:
        return self.net(image)

    @staticmethod
    def targets(batch: dict) -> list[dict]:
        return [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.criterion(self(batch["image"]), self.targets(batch))
        self.log_dict({f"train/{k}": losses[k] for k in LOGGED_LOSSES}, prog_bar=True, batch_size=len(batch["image"]))
        return losses["loss"]

    def _evaluate(self, batch: dict, stage: str) -> None:
        outputs = self(batch["image"])
        losses = self.criterion(outputs, self.targets(batch))
        self.log_dict({f"{stage}/{k}": losses[k] for k in LOGGED_LOSSES}, on_epoch=True, batch_size=len(batch["image"]))
        for pred, boxes, labels in zip(postprocess(outputs), batch["boxes"], batch["labels"]):
            truth = {"true_boxes": box_cxcyczwhd_to_xyzxyz(boxes), "true_labels": labels}  # [N, 6], [N]
            self._outputs.append({k: v.cpu() for k, v in {**pred, **truth}.items()})

    def _log_set_metrics(self, stage: str) -> None:
        if not self._outputs:
            return
        o = self._outputs
        metrics = {
            f"{stage}/{name}": mean_average_precision(
                [x["boxes"] for x in o], [x["scores"] for x in o], [x["labels"] for x in o],
                [x["true_boxes"] for x in o], [x["true_labels"] for x in o], iou,
            )
            for name, iou in MAP_THRESHOLDS.items()
        }  # fmt: skip
        metrics[f"{stage}/froc"] = froc(
            [x["boxes"] for x in o], [x["scores"] for x in o], [x["true_boxes"] for x in o], self.hparams.froc_iou
        )[0]
        self._outputs = []
        self.log_dict(metrics, prog_bar=stage == "val")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_set_metrics("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_set_metrics("test")

    def configure_optimizers(self):
        backbone = getattr(self.net, "backbone", None)
        backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        groups = [
            {"params": [p for p in self.parameters() if id(p) not in backbone_ids], "lr": self.hparams.lr},
            {"params": [p for p in self.parameters() if id(p) in backbone_ids], "lr": self.hparams.lr_backbone},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.hparams.weight_decay)
        return warmup_cosine(optimizer, self.trainer, self.hparams.warmup_steps)
