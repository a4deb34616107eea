"""Training step time: `medseg fit` against a plain PyTorch loop on the same network, data and batch.

    python scripts/bench_training.py --steps 12 --feature-size 12 --roi 64

Also prints the time spent fetching each batch from the second epoch on (the memory cache is full
then), as a share of the step.

Both paths use the same generated cases, the same MONAI transforms and caching, Swin UNETR, Dice+BCE and
AdamW; the plain loop is what a MONAI tutorial writes by hand. Reports the median step time of each
(the first two steps are warm-up and not counted) and their ratio. Time nothing while another heavy
process runs: on 2 cores a second job changes step times several-fold.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from pytorch_lightning import Callback

from medseg.cli import MedsegCLI
from medseg.data.datamodule import BratsDataModule
from medseg.data.demo import generate_dataset
from medseg.losses import DiceBCELoss
from medseg.nets import SwinUNETR

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 2


class StepTimer(Callback):
    """Wall time from one training batch's start to the next one's (data loading included), and the part
    of it spent between one batch's end and the next one's start (fetching the batch: data loading). The
    first batch of each epoch is left out of the latter: its wait also holds the previous epoch's end
    (checkpoint saving) and the loader's restart."""

    def __init__(self) -> None:
        self.times, self.last = [], None
        self.waits, self.ended = [], None  # (epoch, seconds)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        if self.ended is not None and batch_idx > 0:
            self.waits.append((trainer.current_epoch, now - self.ended))
        self.last = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ended = time.perf_counter()


def plain_loop(data_dir: Path, steps: int, feature_size: int, roi: int) -> list[float]:
    torch.manual_seed(0)
    dm = BratsDataModule(str(data_dir), roi_size=(roi,) * 3, val_fraction=0.0, augment="light")  # as the config
    dm.setup("fit")
    loader = dm.train_dataloader()
    net = SwinUNETR(in_channels=4, out_channels=3, feature_size=feature_size)
    loss_fn = DiceBCELoss()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    times, last, done = [], None, 0
    while done < steps + 1:
        for batch in loader:
            now = time.perf_counter()
            if last is not None:
                times.append(now - last)
            last = now
            if done == steps + 1:
                break
            loss = loss_fn(net(batch["image"]), batch["label"])["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
    return times


def medseg_fit(data_dir: Path, run: Path, steps: int, feature_size: int, roi: int) -> tuple[list[float], list]:
    timer = StepTimer()
    cli = MedsegCLI(
        args=[
            "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"),
            "--data.init_args.data_dir", str(data_dir),
            "--data.init_args.roi_size", f"[{roi}, {roi}, {roi}]",
            "--model.init_args.roi_size", f"[{roi}, {roi}, {roi}]",
            "--model.init_args.net.init_args.feature_size", str(feature_size),
            "--trainer.default_root_dir", str(run),
            "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
            "--trainer.logger.save_dir", str(run),
            "--trainer.max_steps", str(steps + 1),
            "--trainer.enable_progress_bar", "false",
        ],
        run=False,
    )  # fmt: skip
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer.times, timer.waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--cases", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train"
        generate_dataset(data, args.cases, seed=0)
        plain = plain_loop(data, args.steps, args.feature_size, args.roi)[WARMUP:]
        fit, waits = medseg_fit(data, Path(tmp) / "run", args.steps, args.feature_size, args.roi)
        fit = fit[WARMUP:]
    p, m = statistics.median(plain), statistics.median(fit)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"feature_size {args.feature_size}, roi {args.roi}"
    )
    print(f"plain loop: median {p:.2f} s/step over {len(plain)} steps ({', '.join(f'{t:.2f}' for t in plain)})")
    print(f"medseg fit: median {m:.2f} s/step over {len(fit)} steps ({', '.join(f'{t:.2f}' for t in fit)})")
    print(f"medseg fit / plain loop: {m / p:.3f}")
    later = [w for epoch, w in waits if epoch >= 1]  # cache filled during the first epoch
    if later:
        w = statistics.median(later)
        print(
            f"data loading from the second epoch on (cache: memory): "
            f"median {w * 1000:.0f} ms/step = {w / m:.1%} of a step"
        )


if __name__ == "__main__":
    main()
