"""Per-sample time of the training transforms after the cache, for each augmentation preset.

    python scripts/bench_augment.py --roi 64 --samples 60 --threads 1
    python scripts/bench_augment.py --roi 64 --shape 160 192 160     # BraTS-sized volumes

Generated BraTS-style cases, cached as training caches them (``CacheDataset``: everything before the
first random transform), then ``--samples`` training samples per preset, the presets taking turns so
that a busy machine slows them alike; each sample reseeded as the step-seeded training stream reseeds it.
Prints the median and mean milliseconds per sample (crop, augmentation, type conversion) of each preset.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.data import CacheDataset

from medseg.data.demo import generate_dataset
from medseg.data.layouts import read_dataset
from medseg.data.transforms import train_transforms

PRESETS = {"light": "light", "nnunet": "nnunet", "nnunet + elastic 0.2": {"elastic": {"prob": 0.2}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 96, 64), help="generated volume size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker has 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(Path(tmp), args.cases, seed=0, shape=args.shape)
        cases = read_dataset(tmp).cases
        roi = (args.roi,) * 3
        transforms = {name: train_transforms("brats2021", roi, augment=spec) for name, spec in PRESETS.items()}
        datasets = {name: CacheDataset(cases, t, progress=False) for name, t in transforms.items()}
        shape = tuple(datasets["light"]._cache[0]["image"].shape)
        times = {name: [] for name in PRESETS}
        for i in range(args.samples):
            for name, dataset in datasets.items():
                transforms[name].set_random_state(seed=i)
                start = time.perf_counter()
                dataset[i % len(cases)]
                times[name].append(time.perf_counter() - start)
    print(f"cached volumes {shape}, roi {args.roi}, {args.threads} thread(s), {args.samples} samples each")
    for name, t in times.items():
        print(f"{name:22s} median {statistics.median(t) * 1000:6.1f} ms, mean {statistics.mean(t) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
