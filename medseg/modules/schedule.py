"""The learning-rate schedule every medseg module uses: linear warm-up, then cosine decay to 0 (MONAI's)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from monai.optimizers import WarmupCosineSchedule


def warmup_cosine(optimizer: torch.optim.Optimizer, trainer: pl.Trainer, warmup_steps: float) -> dict:
    """Lightning's optimizer config for ``optimizer`` stepped every batch.

    ``warmup_steps`` counts optimizer steps, or is a fraction of all of them when below 1; the total is
    the trainer's estimate (``max_steps``, or epochs x batches).
    """
    total = max(1, int(trainer.estimated_stepping_batches))
    warmup = int(warmup_steps * total) if warmup_steps < 1 else int(warmup_steps)
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=min(warmup, total - 1), t_total=total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
