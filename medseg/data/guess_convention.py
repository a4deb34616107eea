"""Guessing a dataset's label convention: from its case ids (BraTS 2021 / 2023 naming) or from the names
of its labels in an nnU-Net / MSD dataset.json."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medseg.data.labels import CONVENTIONS, LabelConvention, convention_of_case_id
from medseg.errors import LayoutError


def _convention_from_names(cases: list[dict], source: Path) -> LabelConvention:
    """BraTS2021_* (BraTS20_*, ...) -> brats2021, BraTS-GLI-* (-MEN-, ...) -> brats2023; else a LayoutError."""
    found = {convention_of_case_id(case["case_id"]) for case in cases}
    if len(found) == 1 and None not in found:
        return CONVENTIONS[found.pop()]
    example = cases[0]["case_id"] if cases else "no cases"
    raise LayoutError(
        f"{source}: cannot tell the label convention from the case names (e.g. {example}); "
        f"pass label_convention= (one of {', '.join(CONVENTIONS)})"
    )


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def _label_role(name: str) -> str | None:
    """Sub-region a label name stands for: ``core`` (necrosis / non-enhancing), ``edema`` or ``enhancing``."""
    n = _normalise(name)
    if "edema" in n or n in ("ed", "snfh"):
        return "edema"
    if "necro" in n or "nonenhancing" in n or n in ("ncr", "net", "netc", "ncrnet"):
        return "core"
    if "enhancing" in n or n == "et":
        return "enhancing"
    return None


_REGION_NAMES = {"wholetumor": "WT", "wholetumour": "WT", "wt": "WT", "tumorcore": "TC", "tumourcore": "TC",
                 "tc": "TC", "enhancingtumor": "ET", "enhancingtumour": "ET", "et": "ET"}  # fmt: skip


def _match_labels(labels: dict) -> LabelConvention | None:
    """The convention an nnU-Net dataset.json ``labels`` entry describes, or None."""
    if all(str(k).isdigit() for k in labels):  # nnU-Net v1 / MSD: {"0": "background", "1": "edema", ...}
        labels = {name: int(value) for value, name in labels.items()}
    labels = {name: value for name, value in labels.items() if _normalise(name) != "background"}
    if any(isinstance(v, list) for v in labels.values()):  # region-based: {"whole_tumor": [1, 2, 3], ...}
        regions = {_REGION_NAMES.get(_normalise(n)): frozenset(v if isinstance(v, list) else [v])
                   for n, v in labels.items()}  # fmt: skip
        if None in regions or len(regions) != len(labels):
            return None
        targets = [(conv, {r: frozenset(v) for r, v in conv.regions.items()}) for conv in CONVENTIONS.values()]
    else:
        regions = {_label_role(n): v for n, v in labels.items()}
        if None in regions or len(regions) != len(labels):
            return None
        targets = [(conv, {_label_role(n): v for n, v in conv.labels.items()}) for conv in CONVENTIONS.values()]
    return next((conv for conv, target in targets if target == regions), None)


def _convention_from_labels(labels: Any, source: Path) -> LabelConvention:
    convention = _match_labels(labels) if isinstance(labels, dict) else None
    if convention is None:
        raise LayoutError(
            f"{source}: cannot tell the label convention from its labels {labels}; "
            f"pass label_convention= (one of {', '.join(CONVENTIONS)})"
        )
    return convention
