"""``medseg export``: a checkpoint's network to ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.inference.export import FORMATS, export, metadata_path
from medseg.io import check_output_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="medseg export",
        description="Export the network of a `medseg fit` checkpoint to ONNX or TorchScript (traced at the "
        "sliding-window size), compare it with PyTorch on a sample input and print the max abs difference. "
        "`medseg predict --ckpt FILE` then runs from the exported file.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `medseg fit`")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="default: onnx")
    parser.add_argument("--out", help="output file (default: beside the checkpoint, .onnx or .pt)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.ckpt).with_suffix(FORMATS[args.format])
    check_output_file(out)  # before the model loads
    difference = export(args.ckpt, out, args.format)
    print(
        f"wrote {out} (+ {metadata_path(out).name}); max abs difference to PyTorch on a sample input: {difference:.3g}"
    )
    return 0
