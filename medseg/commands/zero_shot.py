"""``medseg zero-shot``: classify scans by comparing them with text prompts, using a CLIP checkpoint."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from medseg.commands.common import report_failures
from medseg.data.base import saved_roi_size
from medseg.data.predict_inputs import find_predict_cases
from medseg.data.reports import pair_transforms
from medseg.devices import resolve_device
from medseg.errors import MedsegError, find_medseg_error
from medseg.inference.checkpoint import load_checkpoint
from medseg.io import atomic_path, check_output_file
from medseg.modules.clip import ClipModule

# Prompt ensemble for --classes: each class name is put into every template; the embeddings are averaged.
DEFAULT_TEMPLATES = ("{}.", "There is {}.", "Findings: {}.", "Impression: {}.")

DESCRIPTION = """\
Zero-shot classification of brain MRI scans with an image-report (CLIP-style) checkpoint written by
`medseg fit --config configs/clip_demo.yaml`: no classifier is trained. Each class is described by text
prompts; their embeddings are averaged (a prompt ensemble) and each scan gets a probability per class
from its similarity to them.

Classes come either from --classes (each name is put into the templates of --templates) or from
--prompts, a JSON file {"class": ["prompt", ...], ...}. INPUT is as for `medseg predict`: the modality
files of one case, a case folder, a folder of case folders, or 4-D files.

Prints one row per case with the probability of each class (and writes them to --out as CSV).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg zero-shot", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='example: medseg zero-shot data/test --ckpt runs/clip_demo/checkpoints/last.ckpt '
               '--classes "enhancing tumour" "no enhancing tumour"',
    )  # fmt: skip
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="case files or folders")
    parser.add_argument("--ckpt", required=True, help="CLIP checkpoint written by `medseg fit`")
    classes = parser.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", nargs="+", metavar="NAME", help="class names, put into the templates")
    classes.add_argument("--prompts", metavar="FILE", help='JSON {"class": ["prompt", ...]}')
    parser.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES), metavar="T",
                        help="prompt templates for --classes, {} standing for the name "
                             "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--out", "-o", metavar="CSV", help="also write the probabilities to this CSV file")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
    return parser


def read_prompts(args: argparse.Namespace) -> dict[str, list[str]]:
    """{class: [prompts]} from --prompts FILE, or from --classes put into --templates."""
    if args.classes:
        if len(set(args.classes)) < 2:
            raise MedsegError(f"--classes needs at least two different class names, got {args.classes}")
        bad = [t for t in args.templates if "{}" not in t]
        if bad:
            raise MedsegError(f"--templates must each hold {{}} where the class name goes; {bad[0]!r} does not")
        return {name: [t.format(name) for t in args.templates] for name in args.classes}
    path = Path(args.prompts)
    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MedsegError(f"{path}: cannot read the prompts file ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise MedsegError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(prompts, dict) or len(prompts) < 2:
        raise MedsegError(f'{path}: expected an object of at least two classes, {{"class": ["prompt", ...], ...}}')
    for name, texts in prompts.items():
        if isinstance(texts, str):
            prompts[name] = texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise MedsegError(f"{path}: class {name!r} needs a non-empty list of prompt strings, found {texts!r}")
    return prompts


def run(args: argparse.Namespace) -> int:
    prompts = read_prompts(args)
    if args.out:
        check_output_file(Path(args.out))  # before the model loads
    cases = find_predict_cases(args.inputs)
    device = resolve_device(args.device)
    module, data = load_checkpoint(args.ckpt, ClipModule)
    module = module.to(device)
    roi_size = saved_roi_size(data)
    if roi_size is None:
        raise MedsegError(
            f"{args.ckpt}: holds no data roi_size (was it trained with medseg.data.reports.ReportDataModule?)"
        )
    transform = pair_transforms(roi_size, data.get("spatial_mode", "resize"), data.get("pixdim"))
    names = list(prompts)
    with torch.inference_mode():
        classes = module.class_embeddings(prompts)  # [C, D]
        rows, failures = [], []
        width = max([len("case"), *(len(c["case_id"]) for c in cases)])
        print(f"{'case':<{width}}  " + "  ".join(names), flush=True)
        for case in cases:
            try:
                image = transform(case)["image"][None].to(device)  # [1, 4, *image_size]
            except Exception as e:  # a bad case is reported and skipped
                error = find_medseg_error(e)
                if error is None:
                    raise
                failures.append(str(error))
                continue
            probs = module.zero_shot_probs(module.encode_image(image), classes)[0].cpu()  # [C]
            rows.append([case["case_id"], *(float(p) for p in probs)])
            cells = "  ".join(f"{float(p):>{len(n)}.3f}" for p, n in zip(probs, names))
            print(f"{case['case_id']:<{width}}  {cells}", flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["case_id", *names])
            writer.writerows(rows)
    return report_failures(failures)


def main(argv: list[str] | None = None) -> int:
    """``medseg zero-shot``: returns the exit status (1 if any case failed)."""
    return run(build_parser().parse_args(argv))
