"""What several commands print the same way."""

from __future__ import annotations

import sys


def report_failures(failures: list[str]) -> int:
    """List the cases that failed on stderr; the exit status: 1 if any failed, else 0."""
    if failures:
        print(f"{len(failures)} case(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0
