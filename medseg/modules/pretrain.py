"""LightningModule for self-supervised pre-training of a Swin encoder on scans without labels (``medseg pretrain``).

Batch contract (``medseg.data.unlabelled.UnlabelledDataModule``), C channels, v in 1, 2: ``view_v`` [B, C, *roi]
masked and rotated crops, ``target_v`` [B, C, *roi] the rotated crops before masking, ``rotation_v`` [B] their
quarter turns. Both views go through the network as one batch [2B, C, *roi].

Loss (:class:`medseg.losses.SSLLoss`): Tang et al.'s masked-cube inpainting, rotation prediction and
contrastive coding, weighted. Logged: ``train/loss``, ``train/inpaint``, ``train/rotation``,
``train/contrastive``, ``train/rotation_acc``, ``train/embedding_std`` (the spread of the unit-length
contrastive embeddings over the batch: it falls towards 0 when the encoder collapses to one output for every
scan, as it does at too high a learning rate); the same under ``val/`` when the datamodule holds cases out.

The checkpoint's ``net.swinViT.*`` tensors start a segmentation network: ``model.init_args.pretrained`` of
``medseg fit`` (:func:`medseg.nets.pretrained.load_pretrained`).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import ConfigError
from medseg.losses import SSLLoss
from medseg.modules.hparams import save_hparams
from medseg.modules.schedule import warmup_cosine


class PretrainModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        lr: float = 3e-4,
        weight_decay: float = 0.05,
        warmup_steps: float = 0.05,
        inpaint_weight: float = 1.0,
        rotation_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        temperature: float = 0.5,
    ) -> None:
        """
        Args:
            net: image [B, C, *roi] -> ``rotation`` [B, 4], ``contrastive`` [B, D], ``reconstruction`` [B, C, *roi]
                (``medseg.nets.SwinPretrainNet``); its ``in_channels`` must match the data's channels.
            lr: peak AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_steps: linear warm-up in optimizer steps, or a fraction of all steps if < 1; cosine decay to 0
                after it (``medseg.modules.schedule``).
            inpaint_weight: weight of the masked-cube inpainting part (L1).
            rotation_weight: weight of the rotation part (cross-entropy over 4 quarter turns); 0 leaves it out.
            contrastive_weight: weight of the contrastive part (NT-Xent between the two views); 0 leaves it out.
                With ``rotation_weight`` 0 too, a plain masked-image objective.
            temperature: temperature of the contrastive part.
        """
        super().__init__()
        save_hparams(self)
        if not any(w > 0 for w in (inpaint_weight, rotation_weight, contrastive_weight)):
            raise ConfigError("model.init_args: inpaint_weight, rotation_weight and contrastive_weight are all 0")
        self.net = net
        self.loss = SSLLoss(inpaint_weight, rotation_weight, contrastive_weight, temperature)

    def setup(self, stage: str) -> None:
        """Check the network takes the datamodule's channels (when there is one)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        task = getattr(datamodule, "task", None)
        found = getattr(self.net, "in_channels", None)
        if task is not None and found is not None and found != task.in_channels:
            raise ConfigError(
                f"the network takes {found} input channels but the scans have {task.in_channels} "
                f"({', '.join(task.channel_names)}): set model.init_args.net.init_args.in_channels: {task.in_channels}"
            )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image [B, C, X, Y, Z] -> the network's dict (``rotation``, ``contrastive``, ``reconstruction``)."""
        return self.net(image)

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        views = torch.cat([batch["view_1"], batch["view_2"]])  # [2B, C, *roi]
        target = torch.cat([batch["target_1"], batch["target_2"]])  # [2B, C, *roi]
        rotation = torch.cat([batch["rotation_1"], batch["rotation_2"]]).long()  # [2B]
        outputs = self(views)
        losses = self.loss(outputs, target, rotation)
        losses["rotation_acc"] = (outputs["rotation"].argmax(1) == rotation).float().mean()
        # spread of the unit-length embeddings over the views: near 0 means the encoder has collapsed to one
        # output for every input (contrastive stuck at log(2B - 1), rotation at chance): lower the lr
        losses["embedding_std"] = F.normalize(outputs["contrastive"].detach(), dim=1).std(0).mean()
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in losses.items()},
            prog_bar=on_step,
            on_step=on_step,
            on_epoch=not on_step,
            batch_size=len(views),
            sync_dist=not on_step,
        )
        return losses["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        return warmup_cosine(optimizer, self.trainer, self.hparams.warmup_steps)
