"""``medseg report``: the page of a ``medseg fit`` run (:mod:`medseg.reporting.runs`)."""

from __future__ import annotations

import argparse

from medseg.reporting.runs import write_run_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg report",
        description="Write RUN_DIR/report/index.html for a `medseg fit` run: training curves and the table of "
        "validations, read from the run's own logs (a CSV logger's metrics.csv, or wandb's offline run file). "
        "It opens from the file system, with no server. Predictions have their own page: medseg predict "
        "--report, medseg evaluate --report.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (--trainer.default_root_dir of medseg fit)")
    parser.add_argument("--out", metavar="DIR", help="where the page goes (default: RUN_DIR/report)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"report: {write_run_report(args.run_dir, args.out)}")
    return 0
