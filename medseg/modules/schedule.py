"""The learning-rate schedule every medseg module uses: linear warm-up, then cosine decay to 0 (MONAI's).

Where the cosine ends:

- ``trainer.max_steps`` (or epochs x batches): there, as MONAI's ``WarmupCosineSchedule``;
- ``trainer.max_time`` (a wall-time budget, ``max_steps: -1``): where the time runs out, estimated from
  the measured step time (:class:`TimedWarmupCosine`): steps ``SKIP`` to ``SKIP + MEASURE`` are timed,
  then the end is set to ``step + time remaining / seconds per step``, and re-estimated every ``EVERY``
  steps from the mean step time since step ``SKIP`` (validation and checkpoints included as they come);
- both: the nearer of the two, re-estimated the same way;
- neither (no limit at all): linear warm-up, then a constant learning rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from monai.optimizers import WarmupCosineSchedule
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

SKIP, MEASURE, EVERY = 2, 10, 50  # steps not timed (start-up), timed before the first estimate, between estimates
UNKNOWN = 2**40  # the end before the first estimate, when no step limit gives one


def _warmup(warmup_steps: float, total: int) -> int:
    """``warmup_steps`` in steps: as given from 1 up, else that fraction of ``total``."""
    return int(warmup_steps * total) if warmup_steps < 1 else int(warmup_steps)


class TimedWarmupCosine(WarmupCosineSchedule):
    """MONAI's warm-up + cosine whose end, ``t_total``, is where a wall-time budget runs out (module docstring).

    Until the first estimate the end is ``max_steps``, or unknown: an integer warm-up then runs as given,
    a fractional one stays at its start (learning rate 0, ``MEASURE + SKIP`` steps). Past the end the
    learning rate stays 0 (a late stop never climbs the cosine back up).

    Args:
        optimizer: stepped once per scheduler step.
        warmup_steps: optimizer steps, or a fraction of the (estimated) total when below 1.
        max_steps: the step limit, or None.
        time_remaining: seconds left of the budget (``Timer.time_remaining``).
        clock: seconds, monotonic (``time.monotonic``; tests pass a fake one).
        broadcast: rank 0's estimate to every rank (``trainer.strategy.broadcast``): one schedule for all.
    """

    # Not saved: measured anew after a resume, and the limits are the resumed run's own.
    TRANSIENT = ("_clock", "_time_remaining", "_broadcast", "_calls", "_start", "fraction", "max_steps")

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: float,
        max_steps: int | None,
        time_remaining: Callable[[], float | None],
        clock: Callable[[], float] = time.monotonic,
        broadcast: Callable = lambda obj: obj,
    ) -> None:
        self.fraction, self.max_steps = warmup_steps, max_steps
        self._clock, self._time_remaining, self._broadcast = clock, time_remaining, broadcast
        self._calls, self._start = 0, None  # scheduler steps in this process; (clock, step) at SKIP
        total = max_steps or UNKNOWN
        super().__init__(optimizer, warmup_steps=min(_warmup(warmup_steps, total), total - 1), t_total=total)

    def lr_lambda(self, step: int) -> float:
        return super().lr_lambda(min(step, self.t_total))

    def step(self, epoch=None) -> None:
        if self.last_epoch >= 0:  # not the step LambdaLR takes when it is made
            self._calls += 1
            now, step = self._clock(), self.last_epoch + 1  # optimizer steps done
            if self._calls == SKIP:
                self._start = (now, step)
            elif self._calls >= SKIP + MEASURE and (self._calls - SKIP - MEASURE) % EVERY == 0:
                self._estimate(now, step)
        super().step()

    def _estimate(self, now: float, step: int) -> None:
        start, first = self._start
        seconds = (now - start) / max(1, step - first)
        remaining = max(0.0, self._time_remaining() or 0.0)
        horizon = step + remaining / max(seconds, 1e-9)
        if self.max_steps:
            horizon = min(horizon, self.max_steps)
        self.t_total = int(self._broadcast(max(1, step, int(horizon))))  # spent: 0 from now on
        self.warmup_steps = min(_warmup(self.fraction, self.t_total), self.t_total - 1)
        if self._calls == SKIP + MEASURE:
            limit = f" (max_steps {self.max_steps})" if self.max_steps else ""
            rank_zero_info(
                f"max_time: {seconds:.2f} s/step, {remaining:.0f} s left: warm-up to step {self.warmup_steps}, "
                f"then cosine decay to 0 at step {self.t_total}{limit}, re-estimated every {EVERY} steps"
            )

    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k not in self.TRANSIENT}


def _time_budget(trainer: pl.Trainer) -> Timer | None:
    """The trainer's ``max_time`` timer, if it has one."""
    timers = [c for c in getattr(trainer, "callbacks", []) if isinstance(c, Timer) and c.time_remaining() is not None]
    return timers[0] if timers else None


def warmup_cosine(
    optimizer: torch.optim.Optimizer, trainer: pl.Trainer, warmup_steps: float, constant: bool = False
) -> dict:
    """Lightning's optimizer config for ``optimizer`` stepped every batch, ending as the module docstring says.

    ``warmup_steps`` counts optimizer steps, or is a fraction of all of them when below 1; ``constant``: no
    decay after the warm-up.
    """
    estimate = trainer.estimated_stepping_batches
    finite = math.isfinite(estimate)
    timer = _time_budget(trainer)
    if constant:
        warmup = _warmup(warmup_steps, max(1, int(estimate))) if finite or warmup_steps >= 1 else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup)))
    elif timer is not None:
        strategy = getattr(trainer, "strategy", None)
        broadcast = strategy.broadcast if strategy is not None else (lambda obj: obj)
        max_steps = max(1, int(estimate)) if finite else None
        scheduler = TimedWarmupCosine(optimizer, warmup_steps, max_steps, timer.time_remaining, broadcast=broadcast)
    elif not finite:
        warmup = int(warmup_steps) if warmup_steps >= 1 else 0
        rank_zero_warn(
            f"no max_steps, max_epochs or max_time: learning rate warms up over {warmup} steps, then stays "
            "constant (set trainer.max_steps or trainer.max_time for the cosine decay)"
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup)))
    else:
        total = max(1, int(estimate))
        warmup = _warmup(warmup_steps, total)
        scheduler = WarmupCosineSchedule(optimizer, warmup_steps=min(warmup, total - 1), t_total=total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
