"""The learning-rate schedule every medseg module uses: linear warm-up, then cosine decay to 0 (MONAI's)."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from monai.optimizers import WarmupCosineSchedule
from pytorch_lightning.utilities import rank_zero_warn


def warmup_cosine(optimizer: torch.optim.Optimizer, trainer: pl.Trainer, warmup_steps: float) -> dict:
    """Lightning's optimizer config for ``optimizer`` stepped every batch.

    ``warmup_steps`` counts optimizer steps, or is a fraction of all of them when below 1; the total is
    the trainer's estimate (``max_steps``, or epochs x batches). When the trainer has no step or epoch
    limit (only ``max_time``), the end is unknown: linear warm-up (a fraction then counts as 0 steps),
    then a constant learning rate.
    """
    estimate = trainer.estimated_stepping_batches
    if not math.isfinite(estimate):
        warmup = int(warmup_steps) if warmup_steps >= 1 else 0
        rank_zero_warn(
            f"no max_steps or max_epochs: learning rate warms up over {warmup} steps, then stays constant "
            "(set trainer.max_steps for the cosine decay)"
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    total = max(1, int(estimate))
    warmup = int(warmup_steps * total) if warmup_steps < 1 else int(warmup_steps)
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=min(warmup, total - 1), t_total=total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
