#!/usr/bin/env python
"""CLIP-style image-report pre-training on demo data for a fixed number of optimizer steps, then held-out
retrieval and zero-shot scores with their chance levels. Everything is seeded (data, reports, model,
augmentation, batch order): two runs of one commit print the same numbers, whatever the machine's load.

    python scripts/train_clip_demo.py                          # 1200 steps: about 12 minutes on 2 CPU cores
    python scripts/train_clip_demo.py --seed 1 --out runs/clip_demo_s1

1. writes ``OUT/data/train`` and ``OUT/data/test`` (held-out case numbers): demo cases whose lesions
   enhance or not and are necrotic or not at random (``p_enhancing=0.5, p_necrosis=0.5``), each with a
   report written from its own ground truth (``write_demo_reports``, the same size words for both sets);
2. pre-trains with ``medseg fit --config configs/clip_demo.yaml`` (ViT image encoder, from-scratch text
   Transformer) for ``--steps`` optimizer steps (warm-up and cosine decay over them), seeded with
   ``--seed``; the wall time is printed, never used to stop;
3. on the held-out pairs prints image->text and text->image Recall@1/5/10 (chance K/N) and zero-shot
   accuracy and AUROC of the config's prompt ensembles: enhancing vs not, left vs right hemisphere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medseg.cli import main as medseg_main  # noqa: E402
from medseg.data.base import saved_roi_size  # noqa: E402
from medseg.data.demo import generate_dataset  # noqa: E402
from medseg.data.demo_reports import volume_terciles, write_demo_reports  # noqa: E402
from medseg.data.reports import pair_transforms, read_pairs  # noqa: E402
from medseg.inference.checkpoint import load_checkpoint  # noqa: E402
from medseg.metrics.retrieval import retrieval_recall, zero_shot_metrics  # noqa: E402
from medseg.modules.clip import ClipModule  # noqa: E402

DEMO = {"shape": (48, 48, 40), "spacing": (2.5, 2.5, 2.5), "p_enhancing": 0.5, "p_necrosis": 0.5}


def make_data(out: Path, n_train: int, n_test: int, seed: int) -> tuple[Path, Path]:
    train, test = out / "data" / "train", out / "data" / "test"
    for folder, n, start in ((train, n_train, 0), (test, n_test, 100_000)):
        if not (folder / "demo_truth.json").exists():
            generate_dataset(folder, n, seed=seed, start_index=start, **DEMO)
    thresholds = volume_terciles(json.loads((train / "demo_truth.json").read_text()))
    return write_demo_reports(train, seed, thresholds), write_demo_reports(test, seed + 1, thresholds)


@torch.inference_mode()
def evaluate(ckpt: Path, test_reports: Path) -> dict:
    module, data = load_checkpoint(ckpt, ClipModule)
    transform = pair_transforms(saved_roi_size(data), data["spatial_mode"], data.get("pixdim"))
    pairs = read_pairs(test_reports)
    images = torch.cat([module.encode_image(transform(p)["image"][None]) for p in pairs])  # [N, D]
    texts = torch.cat([module.encode_text([p["report"] for p in pairs[i : i + 64]]) for i in range(0, len(pairs), 64)])
    results = {"n": len(pairs), "recall": retrieval_recall(images, texts, (1, 5, 10)), "zero_shot": {}}
    for task, prompts in (module.hparams.zero_shot or {}).items():
        truth = [p["labels"].get(task, "") for p in pairs]
        probs = module.zero_shot_probs(images, module.class_embeddings(prompts))  # [N, C]
        shares = {c: truth.count(c) / len(truth) for c in prompts}
        results["zero_shot"][task] = {**zero_shot_metrics(probs, truth, list(prompts)), "shares": shares}
    return results


def report(results: dict, seconds: float) -> None:
    n = results["n"]
    print(f"\nheld-out pairs: {n} (chance Recall@K = K/{n})")
    print(f"{'':16}{'R@1':>8}{'R@5':>8}{'R@10':>8}")
    for direction, name in (("i2t", "image -> text"), ("t2i", "text -> image")):
        cells = "".join(f"{results['recall'][f'{direction}_recall@{k}']:8.3f}" for k in (1, 5, 10))
        print(f"{name:16}{cells}")
    print(f"{'chance':16}" + "".join(f"{k / n:8.3f}" for k in (1, 5, 10)))
    print(
        "\nzero-shot (prompt ensembles of configs/clip_demo.yaml); chance: accuracy = largest class share, AUROC = 0.5"
    )
    for task, scores in results["zero_shot"].items():
        shares = ", ".join(f"{c} {s:.2f}" for c, s in scores["shares"].items())
        chance = max(scores["shares"].values())
        print(
            f"  {task:11} accuracy {scores['acc']:.3f} (chance {chance:.3f})   AUROC {scores['auroc']:.3f}   [{shares}]"
        )
    print(f"\ntotal time {seconds / 60:.1f} min")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="data and run folder (default: runs/clip_demo/seed<SEED>)")
    parser.add_argument("--train-cases", type=int, default=320)
    parser.add_argument("--test-cases", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps (default: 1200)")
    parser.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data, the reports, the initial weights, augmentation and batch order",
    )
    args = parser.parse_args(argv)
    args.out = args.out or Path(f"runs/clip_demo/seed{args.seed}")
    sys.argv = sys.argv[:1]  # LightningCLI below gets its own arguments
    start = time.monotonic()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    train_reports, test_reports = make_data(args.out, args.train_cases, args.test_cases, args.seed)
    print(f"demo data and reports: {time.monotonic() - start:.0f} s", flush=True)

    run, config = args.out / "run", ROOT / "configs" / "clip_demo.yaml"
    print(f"training for {args.steps} steps (seed {args.seed})", flush=True)
    code = medseg_main([
        "fit", "--config", str(config),
        "--data.init_args.reports", str(train_reports),
        "--data.init_args.val_reports", str(test_reports),
        "--trainer.default_root_dir", str(run),
        "--seed_everything", str(args.seed),
        "--trainer.max_steps", str(args.steps),
        "--trainer.max_time", "null",
        "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    if code:
        return code
    print(f"trained: {time.monotonic() - start:.0f} s ({args.steps} steps)", flush=True)
    results = evaluate(run / "checkpoints" / "last.ckpt", test_reports)
    report(results, time.monotonic() - start)
    if args.json:
        args.json.write_text(json.dumps({**results, "steps": args.steps, "seed": args.seed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
