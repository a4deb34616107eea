"""LightningModule for volume-level classification (a label per scan) with any injected network.

Batch contract (from ``medseg.data.classification``), the same in training, validation and test:

- ``image`` [B, 4, X, Y, Z] float, the whole head resized to the network's input size;
- ``target`` [B] long, the class of each volume, in ``0 .. num_classes - 1``;
- ``case_id`` [B] str (optional).

The network maps ``image`` to raw logits [B, num_classes] (no softmax, no Tanh: use
``medseg.nets.vit.ViTClassifier``, not MONAI's ViT, which returns a tuple of Tanh-squashed logits).

Logged: ``train/loss``, ``train/acc`` (per step); ``val/loss``, ``val/acc``, ``val/auroc`` (per epoch);
the same under ``test/``. AUROC is one-vs-rest, macro-averaged (the usual AUROC for two classes); it is
NaN, with a warning, when the split lacks a class.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics.aggregation import CatMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from medseg.modules.hparams import save_hparams
from medseg.modules.schedule import warmup_cosine


class ClassificationModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 2,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        warmup_steps: float = 0.05,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        """
        Args:
            net: the network, [B, 4, X, Y, Z] -> logits [B, num_classes] (e.g. ``medseg.nets.vit.ViTClassifier``).
            num_classes: number of classes; the data's targets lie in ``0 .. num_classes - 1``.
            lr: peak AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_steps: linear warm-up length in optimizer steps, or as a fraction of all steps if < 1;
                cosine decay to 0 after it.
            class_weights: cross-entropy weight per class (e.g. the inverse class frequencies), or None.
            label_smoothing: cross-entropy label smoothing (0 to <1).
        """
        super().__init__()
        save_hparams(self)  # the net as its config when LightningCLI built it; left out when built in Python
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries; expected one per class ({num_classes})")
        net_classes = getattr(net, "num_classes", num_classes)
        if net_classes != num_classes:
            name = type(net).__name__
            raise ValueError(f"{name} has {net_classes} outputs but the module's num_classes is {num_classes}")
        self.net = net
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.eval_metrics = nn.ModuleDict({stage: self._stage_metrics(num_classes) for stage in ("val", "test")})

    @staticmethod
    def _stage_metrics(num_classes: int) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "auroc": MulticlassAUROC(num_classes, average="macro"),
                "targets": CatMetric(),  # every target seen, to tell whether AUROC is defined
            }
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 4, X, Y, Z] -> logits [B, num_classes]."""
        logits = self.net(image)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"{type(self.net).__name__} returned a {type(logits).__name__}, not a logits tensor; MONAI's ViT "
                "returns (logits, hidden_states) with Tanh: use medseg.nets.vit.ViTClassifier"
            )
        expected = (len(image), self.hparams.num_classes)
        if tuple(logits.shape) != expected:
            raise ValueError(f"{type(self.net).__name__} returned logits {tuple(logits.shape)}; expected {expected}")
        return logits

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        target = batch["target"].long()  # [B]
        logits = self(batch["image"])  # [B, n_classes]
        loss = self._loss(logits, target)
        acc = (logits.argmax(1) == target).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, batch_size=len(target))
        return loss

    def _evaluate(self, batch: dict, stage: str) -> None:
        target = batch["target"].long()  # [B]
        logits = self(batch["image"])  # [B, n_classes]
        self.log(f"{stage}/loss", self._loss(logits, target), on_epoch=True, batch_size=len(target), sync_dist=True)
        metrics = self.eval_metrics[stage]
        probs = logits.float().softmax(1)  # [B, n_classes]
        metrics["acc"].update(probs, target)
        metrics["auroc"].update(probs, target)
        metrics["targets"].update(target.float())

    def _log_epoch(self, stage: str) -> None:
        metrics = self.eval_metrics[stage]
        if not metrics["acc"].update_called:  # no batches (limit_val_batches: 0)
            return
        counts = torch.bincount(metrics["targets"].compute().long(), minlength=self.hparams.num_classes)  # [n_classes]
        values = {f"{stage}/acc": metrics["acc"].compute()}
        if bool((counts > 0).all()):
            values[f"{stage}/auroc"] = metrics["auroc"].compute()
        else:
            missing = [c for c, n in enumerate(counts.tolist()) if n == 0]
            rank_zero_warn(f"{stage}/auroc is undefined (NaN): the {stage} cases hold no target of class {missing} "
                           f"(class counts {counts.tolist()})")  # fmt: skip
            values[f"{stage}/auroc"] = torch.tensor(math.nan, device=self.device)
        self.log_dict(values, prog_bar=stage == "val")  # already gathered from every process by compute()
        for metric in metrics.values():
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        return warmup_cosine(optimizer, self.trainer, self.hparams.warmup_steps)
