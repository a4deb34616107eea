"""Guessing a dataset's task: its label convention from its case ids (BraTS 2021 / 2023 naming), or its
whole task from the labels of an nnU-Net / MSD dataset.json or a datalist (and finding that JSON beside a
label folder)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.data.cases import _load_json_object, dataset_channels
from medseg.data.labels import CONVENTIONS, LabelConvention, convention_of_case_id
from medseg.errors import LayoutError
from medseg.tasks import MODALITIES, PRESETS, Channel, Task

_GUESSED = ("brats2021", "brats2023", "msd")  # presets a dataset.json's label names can be matched to


def _convention_from_names(cases: list[dict], source: Path) -> LabelConvention:
    """BraTS2021_* (BraTS20_*, ...) -> brats2021, BraTS-GLI-* (-MEN-, ...) -> brats2023; else a LayoutError."""
    found = {convention_of_case_id(case["case_id"]) for case in cases}
    if len(found) == 1 and None not in found:
        return CONVENTIONS[found.pop()]
    example = cases[0]["case_id"] if cases else "no cases"
    raise LayoutError(
        f"{source}: cannot tell the task from the case names (e.g. {example}) and it has no 'labels'; "
        f"pass data.task (a preset: {', '.join(PRESETS)}, or a dict) or add 'labels' to the JSON"
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
        targets = [(PRESETS[n], {r: frozenset(v) for r, v in PRESETS[n].regions.items()}) for n in _GUESSED]
    else:
        regions = {_label_role(n): v for n, v in labels.items()}
        if None in regions or len(regions) != len(labels):
            return None
        targets = [(PRESETS[p], {_label_role(n): v for n, v in PRESETS[p].labels.items()}) for p in _GUESSED]
    return next((conv for conv, target in targets if target == regions), None)


def task_from_labels(
    labels: Any, channels: tuple[Channel, ...], name: str, source: Path, meta: dict | None = None
) -> Task:
    """The task of a dataset from its JSON ``labels`` and its ``channels``.

    A brain-tumour dataset (the four MR modalities, labels named as BraTS or MSD name them, or nnU-Net's
    BraTS regions) is its preset; any other labels become classes (``{"0": "background", "1": "liver"}``,
    ``{"background": 0, "liver": 1}``), or regions where nnU-Net's region-based form gives value lists
    (``{"whole_tumor": [1, 2, 3], ...}`` with ``regions_class_order``).
    """
    if not isinstance(labels, dict) or not labels:
        raise LayoutError(f'{source}: no \'labels\' naming the label values, e.g. {{"0": "background", "1": "liver"}}')
    if tuple(c.name for c in channels) == MODALITIES:
        preset = _match_labels(labels)
        if preset is not None:
            return preset
    if all(str(k).isdigit() for k in labels):  # MSD / nnU-Net v1: {"0": "background", "1": "liver"}
        labels = {str(n): int(v) for v, n in labels.items()}
    named = {str(n): v for n, v in labels.items() if _normalise(n) != "background" and v != 0}
    try:
        if any(isinstance(v, list) for v in named.values()):  # nnU-Net region-based
            regions = {n: tuple(int(x) for x in (v if isinstance(v, list) else [v])) for n, v in named.items()}
            order = (meta or {}).get("regions_class_order") or []
            values = sorted({v for vs in regions.values() for v in vs})
            paint = tuple(zip(regions, (int(v) for v in order))) if len(order) == len(regions) else ()
            return Task(name, channels, {f"label_{v}": v for v in values}, regions=regions, paint=paint)
        return Task(name, channels, {n: int(v) for n, v in named.items()})
    except (TypeError, ValueError) as err:
        raise LayoutError(f"{source}: cannot read its labels {labels}: {err}") from None


TASK_JSON_NAMES = ("dataset.json", "dataset_0.json")  # nnU-Net / MSD, and MONAI's fold-0 datalist
_DATALIST_SECTIONS = ("training", "validation", "testing")


def task_from_json(path: str | Path) -> Task:
    """The task a dataset.json or datalist JSON describes: its ``labels`` (see :func:`task_from_labels`), with
    the channels its ``channel_names`` (nnU-Net v2) or ``modality`` (MSD, nnU-Net v1, datalists) name; a JSON
    naming none gets one channel ``image`` (channels only tell brain-tumour presets from other tasks).

    Raises ``LayoutError`` naming the file: unreadable, not an object, no ``labels``, labels it cannot read.
    """
    path = Path(path)
    meta = _load_json_object(path)
    key = "channel_names" if isinstance(meta.get("channel_names"), dict) else "modality"
    named = isinstance(meta.get(key), dict) and meta[key]
    channels = dataset_channels(meta[key], path, key)[0] if named else (Channel("image"),)
    return task_from_labels(meta.get("labels"), channels, str(meta.get("name") or path.parent.name), path, meta)


def _names_labels(meta: Any, datalist: bool) -> bool:
    """Whether ``meta`` is a JSON object with a ``labels`` dict (and, with ``datalist``, a list of cases)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict) or not meta["labels"]:
        return False
    return not datalist or any(isinstance(meta.get(s), list) for s in _DATALIST_SECTIONS)


def _read_quietly(path: Path) -> Any:
    """A JSON file's content, or None where it is no JSON at all (any ``*.json`` beside the labels)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def find_task_json(folders: Sequence[str | Path]) -> Path | None:
    """The JSON that names the labels of a label folder, searched in ``folders`` in turn (the label folder,
    then its parent: ``DATA/labelsTs`` -> ``DATA/dataset.json``): ``dataset.json`` or ``dataset_0.json``
    with a ``labels`` entry, else the one datalist ``*.json`` there with ``labels``. None if there is none.

    Raises ``LayoutError`` when one folder holds several datalists with labels (which one is meant?).
    """
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        if not folder.is_dir():
            continue
        for path in (folder / name for name in TASK_JSON_NAMES):
            if path.is_file() and _names_labels(_load_json_object(path), datalist=False):  # a broken one: said
                return path
        others = sorted(p for p in folder.glob("*.json") if p.name not in TASK_JSON_NAMES and p.name[0] != ".")
        found = [p for p in others if p.is_file() and _names_labels(_read_quietly(p), datalist=True)]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise LayoutError(f"{folder}: several datalists name labels ({names}); pass --task FILE.json")
        if found:
            return found[0]
    return None
