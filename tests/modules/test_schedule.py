"""The learning-rate schedule (medseg.modules.schedule): warm-up + cosine ending at max_steps, at the end of
a max_time budget estimated from the step time (a fake clock here), or at the nearer of the two."""

import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
from monai.optimizers import WarmupCosineSchedule
from pytorch_lightning.callbacks import Timer

from medseg.modules.schedule import MEASURE, SKIP, TimedWarmupCosine, warmup_cosine


class Clock:
    """Fake seconds: each optimizer step takes ``step_time`` (changeable mid-run); the budget is ``budget``."""

    def __init__(self, step_time: float, budget: float) -> None:
        self.now, self.step_time, self.budget = 0.0, step_time, budget

    def __call__(self) -> float:
        return self.now

    def remaining(self) -> float:
        return self.budget - self.now


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def _run(scheduler, clock: Clock, slower_after: int | None = None, max_steps: int | None = None) -> list[float]:
    """Learning rates of every step until the budget is spent (Lightning's Timer stops the fit there) or
    ``max_steps`` are done."""
    lrs, step = [], 0
    while clock.remaining() > 0 and step != max_steps:
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        step += 1
        clock.now += clock.step_time * (2 if slower_after is not None and step > slower_after else 1)
        scheduler.step()
    return lrs


def test_max_time_alone_gives_a_whole_warmup_and_cosine():
    clock = Clock(step_time=0.5, budget=100.0)  # 200 steps
    scheduler = TimedWarmupCosine(_optimizer(), 0.1, None, clock.remaining, clock=clock)
    lrs = _run(scheduler, clock)
    assert len(lrs) == 200 and scheduler.t_total == 200 and scheduler.warmup_steps == 20
    assert max(lrs[: SKIP + MEASURE]) < 1e-6  # a fractional warm-up waits for the estimate
    assert lrs[20] == pytest.approx(1.0) and lrs[-1] < 1e-3  # full learning rate, then decayed to 0 at the end
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))  # the cosine only decreases


def test_the_horizon_follows_a_slower_step_time():
    clock = Clock(step_time=0.5, budget=100.0)  # 200 steps at 0.5 s; 60 at 0.5 s then 70 at 1 s
    scheduler = TimedWarmupCosine(_optimizer(), 10, None, clock.remaining, clock=clock)
    lrs = _run(scheduler, clock, slower_after=60)
    assert len(lrs) == 130 and lrs[10] == pytest.approx(1.0)  # an integer warm-up runs from the start
    assert abs(scheduler.t_total - 130) <= 8 and lrs[-1] < 0.02  # re-estimated every EVERY steps
    assert all(0 <= lr <= 1 for lr in lrs)


@pytest.mark.parametrize("max_steps, total", [(120, 120), (500, 200)])
def test_both_limits_end_at_the_nearer(max_steps, total):
    clock = Clock(step_time=0.5, budget=100.0)
    scheduler = TimedWarmupCosine(_optimizer(), 0.1, max_steps, clock.remaining, clock=clock)
    lrs = _run(scheduler, clock, max_steps=max_steps)
    assert scheduler.t_total == total and len(lrs) == total
    if max_steps == total:  # time to spare: exactly MONAI's schedule over max_steps
        reference = WarmupCosineSchedule(_optimizer(), warmup_steps=12, t_total=120)
        expected = []
        for _ in range(120):
            expected.append(reference.optimizer.param_groups[0]["lr"])
            reference.optimizer.step()
            reference.step()
        assert lrs == expected


def test_past_the_end_the_learning_rate_stays_0():
    clock = Clock(step_time=1.0, budget=30.0)
    scheduler = TimedWarmupCosine(_optimizer(), 2, None, clock.remaining, clock=clock)
    _run(scheduler, clock)
    for _ in range(40):  # the fit overran its budget
        scheduler.optimizer.step()
        scheduler.step()
        assert scheduler.optimizer.param_groups[0]["lr"] == 0.0


def test_state_is_plain_data_and_the_measurement_restarts_on_resume():
    clock = Clock(step_time=0.5, budget=100.0)
    scheduler = TimedWarmupCosine(_optimizer(), 0.1, None, clock.remaining, clock=clock)
    for _ in range(30):
        scheduler.optimizer.step()
        clock.now += 0.5
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as medseg loads checkpoints
    assert state["t_total"] == 200 and not any(callable(v) for v in state.values())
    resumed = TimedWarmupCosine(_optimizer(), 0.1, None, clock.remaining, clock=clock)
    resumed.load_state_dict(state)
    assert (resumed.last_epoch, resumed.t_total, resumed._calls) == (30, 200, 0)


def test_warmup_cosine_reads_the_trainer_limits():
    inf = float("inf")
    timer = Timer(duration=timedelta(minutes=10))

    def scheduler(estimate, callbacks=(), warmup=0.2):
        trainer = SimpleNamespace(estimated_stepping_batches=estimate, callbacks=list(callbacks))
        return warmup_cosine(_optimizer(), trainer, warmup)["lr_scheduler"]["scheduler"]

    timed = scheduler(inf, [timer])
    assert isinstance(timed, TimedWarmupCosine) and timed.max_steps is None and timed._time_remaining() == 600
    assert scheduler(300, [timer]).max_steps == 300  # both: the nearer end, once measured
    plain = scheduler(10)
    assert type(plain) is WarmupCosineSchedule and (plain.t_total, plain.warmup_steps) == (10, 2)
    assert type(scheduler(10, [Timer(duration=None)])) is WarmupCosineSchedule  # a timer without a budget


def test_no_limit_at_all_warms_up_then_stays_constant():
    optimizer = _optimizer()
    trainer = SimpleNamespace(estimated_stepping_batches=float("inf"))  # no max_steps, max_epochs, max_time
    with pytest.warns(UserWarning, match="max_time"):
        scheduler = warmup_cosine(optimizer, trainer, warmup_steps=4)["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_constant_schedule_warms_up_then_keeps_the_rate_to_the_end():
    optimizer = _optimizer()
    trainer = SimpleNamespace(estimated_stepping_batches=10, callbacks=[])
    scheduler = warmup_cosine(optimizer, trainer, warmup_steps=0.2, constant=True)["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.5] + [1.0] * 9  # 2 warm-up steps of 10, then no decay
