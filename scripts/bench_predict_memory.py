"""Resident memory while predicting many cases in one run: it must stay flat (no growth per case).

    python scripts/bench_predict_memory.py --cases 50

Generates small demo cases, trains a checkpoint for one step (a 1-layer network: the point is the
pipeline around it, not the network), then predicts every case in one process through the same code as
`medseg predict`, reading the resident set size (/proc/self/statm) after each case. Prints the RSS of
the first and last cases and the least-squares growth per case over the second half.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from medseg.cli import main as medseg
from medseg.data.demo import generate_dataset
from medseg.data.predict_inputs import find_predict_cases
from medseg.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_dataset(tmp / "train", 2, seed=0, shape=(48, 48, 32))
        generate_dataset(tmp / "cases", args.cases, seed=1, start_index=100, shape=(48, 48, 32))
        medseg([
            "fit", "--config", str(ROOT / "configs" / "swin_unetr_demo.yaml"),
            "--data.init_args.data_dir", str(tmp / "train"), "--trainer.default_root_dir", str(tmp / "run"),
            "--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp / "run"),
            "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
            "--data.init_args.roi_size", "[32, 32, 32]", "--model.init_args.roi_size", "[32, 32, 32]",
            "--model.init_args.net", "torch.nn.Conv3d", "--model.init_args.net.in_channels", "4",
            "--model.init_args.net.out_channels", "3", "--model.init_args.net.kernel_size", "3",
            "--model.init_args.net.padding", "same",
        ])  # fmt: skip
        predictor = Predictor.from_checkpoint(tmp / "run" / "checkpoints" / "last.ckpt", device="cpu")
        memory = []
        for case in find_predict_cases([tmp / "cases"]):
            predictor.write(predictor.predict_case(case), tmp / "pred")
            memory.append(rss_mb())
    half = np.arange(len(memory) // 2, len(memory))
    slope = np.polyfit(half, np.array(memory)[half], 1)[0]
    print(f"{len(memory)} cases; RSS after case 1: {memory[0]:.1f} MB, after case 10: {memory[9]:.1f} MB, "
          f"after the last: {memory[-1]:.1f} MB, max {max(memory):.1f} MB")  # fmt: skip
    print(f"growth over the second half: {slope * 1024:.1f} kB per case")


if __name__ == "__main__":
    main()
