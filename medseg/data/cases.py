"""The case dict every reader returns, the modality names, and the file-name and JSON helpers of the readers.

A case dict holds, whatever the layout::

    case_id        str
    image          list[str]: one file per channel of the task, in its order (brain-tumour presets:
                   MODALITIES, t1, t1ce, t2, flair), or str: one file (MSD: 4-D with the channels on
                   its last axis, or 3-D for a single-channel task)
    channel_order  list[int], only with a 4-D file: where the task's channels sit on its last axis
    label          str | None (None for validation/test cases without a label)
    fold           int | None

Paths are absolute (the root made absolute, symlinks kept as they are).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from medseg.errors import CaseError, LayoutError
from medseg.io import VOLUME_SUFFIXES
from medseg.tasks import MODALITIES, Channel, guess_kind

# Lower-case modality name -> canonical; looked up with spaces, "-" and "_" removed (T1-Gd -> t1gd).
MODALITY_ALIASES: dict[str, str] = {
    **dict.fromkeys(("t1", "t1n", "t1w", "t1native"), "t1"),
    **dict.fromkeys(("t1ce", "t1c", "t1gd", "t1wce", "t1post", "t1contrast"), "t1ce"),
    **dict.fromkeys(("t2", "t2w"), "t2"),
    **dict.fromkeys(("flair", "t2f", "t2flair"), "flair"),
}

# BraTS folder layouts: separator before the file suffix, and the suffix of each canonical modality.
_BRATS_NAMING = {
    "brats2021": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}),
    "brats2023": ("-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}),
}


_NNUNET_NAME = re.compile(r"(.+)_(\d{4})")  # <case>_0000


_NAMED_MODALITY = re.compile(r"(.+)[_-]([A-Za-z0-9]+)")  # <case>_t1ce, <case>-t2f (last separator)


def canonical_modality(name: str) -> str | None:
    """Canonical modality of a channel name or file suffix (``T1w`` -> ``t1``, ``t2f`` -> ``flair``), or None."""
    return MODALITY_ALIASES.get(re.sub(r"[\s_-]", "", str(name).lower()))


def _case(
    case_id: str, image: list[str] | str, label: str | Path | None, fold: int | None = None, channel_order=None
) -> dict:
    """One case dict of the contract in the module docstring (``channel_order`` only for a 4-D image)."""
    case = {"case_id": case_id, "image": image, "label": None if label is None else str(label), "fold": fold}
    if channel_order is not None:
        case["channel_order"] = channel_order
    return case


def _split_suffix(name: str) -> tuple[str, str] | None:
    """``a_t1.nii.gz`` -> (``a_t1``, ``.nii.gz``); None for a file that is not an image."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return None


def _stem(name: str) -> str:
    base = Path(str(name)).name
    split = _split_suffix(base)
    return split[0] if split else base


def _named_modality(name: str) -> tuple[str, str] | None:
    """``BraTS2021_00000_t1ce.nii.gz`` -> (``BraTS2021_00000``, ``t1ce``); None if no modality suffix."""
    split = _split_suffix(name)
    match = _NAMED_MODALITY.fullmatch(split[0]) if split else None
    modality = canonical_modality(match[2]) if match else None
    return (match[1], modality) if modality else None


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "__MACOSX"  # ._* files are macOS archive residue


def _image_files(folder: Path) -> dict[str, list[Path]]:
    """Image files directly in ``folder``, by stem (the name without its image suffix)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        split = _split_suffix(path.name)
        if split and not _is_hidden(path) and path.is_file():
            found.setdefault(split[0], []).append(path)
    return found


def _load_json_object(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LayoutError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LayoutError(f"{path}: cannot read: {err}") from None
    if not isinstance(meta, dict):
        raise LayoutError(f"{path}: expected a JSON object, found a {type(meta).__name__}")
    return meta


def _data_path(root: Path, name: Any, where: str, source: Path, case_id: str | None) -> str:
    """A path from a JSON file, made absolute under ``root``; it must stay inside ``root`` and exist."""
    if not isinstance(name, str) or not name:
        raise CaseError(f"{where}: expected a file path, found {name!r}", case_id, source)
    path = os.path.normpath(os.path.join(root, name))  # lexical: symlinks inside the root stay allowed
    if os.path.commonpath([path, str(root)]) != str(root):
        raise CaseError(f"{where}: {name!r} leads outside the data root {root}", case_id, source)
    if not os.path.isfile(path):
        raise CaseError(f"{where}: {name!r} not found ({path})", case_id, source)
    return path


def _map_channels(names: dict, source: Path, key: str) -> dict[str, int]:
    """``{"0": "FLAIR", "1": "T1w", ...}`` -> ``{"flair": 0, "t1": 1, ...}``; errors name the channel."""
    found: dict[str, int] = {}
    for number, name in names.items():
        if not str(number).isdigit():
            raise LayoutError(f"{source}: {key} key {number!r} is not a channel number")
        modality = canonical_modality(name)
        if modality is None:
            raise LayoutError(
                f"{source}: {key} channel {number} {name!r} is not a known modality "
                f"(medseg trains on {', '.join(MODALITIES)}; known names: {', '.join(MODALITY_ALIASES)})"
            )
        if modality in found:
            raise LayoutError(f"{source}: {key} channels {found[modality]} and {number} are both {modality}")
        found[modality] = int(number)
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        raise LayoutError(f"{source}: {key} has no {', '.join(missing)} channel (found {dict(names)})")
    return found


def dataset_channels(names: Any, source: Path, key: str) -> tuple[tuple[Channel, ...], list[int]]:
    """Channels a dataset.json names (``{"0": "FLAIR", "1": "T1w", ...}``, ``{"0": "CT"}``) and the file
    channel numbers in that order.

    The four brain-tumour modalities, in any order and spelling, come out as MODALITIES (t1, t1ce, t2,
    flair) so that brain-tumour models always see them in one order; any other set keeps the dataset's
    numbering, each channel CT if named so, else MR.
    """
    if not isinstance(names, dict) or not names:
        raise LayoutError(f'{source}: no {key!r} naming the input channels, e.g. {{"0": "CT"}} or {{"0": "T1", ...}}')
    numbered: dict[int, str] = {}
    for number, name in names.items():
        if not str(number).isdigit():
            raise LayoutError(f"{source}: {key} key {number!r} is not a channel number")
        numbered[int(number)] = str(name)
    if sorted(numbered) != list(range(len(numbered))):
        raise LayoutError(
            f"{source}: {key} channels are numbered {sorted(numbered)}; expected 0 to {len(numbered) - 1}"
        )
    canonical = {canonical_modality(n): k for k, n in numbered.items()}
    if len(numbered) == len(MODALITIES) and set(canonical) == set(MODALITIES):
        return tuple(Channel(m, "MR") for m in MODALITIES), [canonical[m] for m in MODALITIES]
    order = sorted(numbered)
    return tuple(Channel(numbered[k], guess_kind(numbered[k])) for k in order), order


def _unique(cases: list[dict], source: str | Path) -> list[dict]:
    """``cases`` unchanged; a ``LayoutError`` naming both files if a case id appears twice."""
    seen: dict[str, dict] = {}
    for case in cases:
        first = seen.setdefault(case["case_id"], case)
        if first is not case:
            files = [c["image"] if isinstance(c["image"], str) else c["image"][0] for c in (first, case)]
            raise LayoutError(f"{source}: case {case['case_id']} appears twice ({files[0]} and {files[1]})")
    return cases


def _listing(root: Path) -> list[Path]:
    """Visible entries of a dataset folder; errors for a missing or empty one."""
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder")
    entries = sorted(p for p in root.iterdir() if not _is_hidden(p))
    if not entries:
        raise LayoutError(f"{root}: the folder is empty")
    return entries


def _describe(entries: list[Path]) -> str:
    folders = [e.name + "/" for e in entries if e.is_dir()]
    files = [e.name for e in entries if not e.is_dir()]
    parts = []
    for kind, items in (("folder", folders), ("file", files)):
        if items:
            more = ", ..." if len(items) > 3 else ""
            parts.append(f"{len(items)} {kind}{'s' if len(items) > 1 else ''} ({', '.join(items[:3])}{more})")
    return " and ".join(parts) or "nothing"


def _case_folders(root: Path) -> list[tuple[Path, dict[str, list[Path]]]]:
    """Visible sub-folders of ``root`` that hold image files, with those files by stem."""
    folders = (p for p in sorted(root.iterdir()) if p.is_dir() and not _is_hidden(p))
    return [(folder, stems) for folder in folders if (stems := _image_files(folder))]


def _brats_style(folder: Path, stems: dict[str, list[Path]]) -> str | None:
    for layout, (sep, suffixes) in _BRATS_NAMING.items():
        if any(f"{folder.name}{sep}{s}" in stems for s in (*suffixes.values(), "seg")):
            return layout
    return None


def _brats_styles(root: Path) -> dict[str, list[Path]]:
    styles: dict[str, list[Path]] = {layout: [] for layout in _BRATS_NAMING}
    for folder, stems in _case_folders(root):
        if style := _brats_style(folder, stems):
            styles[style].append(folder)
    return styles


def _nnunet_files(root: Path, ending: str = ".nii.gz") -> tuple[dict[tuple[Path, str], dict[int, list[Path]]], list]:
    """nnU-Net images in imagesTr/ and imagesTs/: (folder, case id) -> channel -> paths, and misnamed files."""
    by_case: dict[tuple[Path, str], dict[int, list[Path]]] = {}
    strays = []
    for folder in (root / "imagesTr", root / "imagesTs"):
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if _is_hidden(path) or not path.name.endswith(ending):
                continue
            if match := _NNUNET_NAME.fullmatch(path.name[: -len(ending)]):
                by_case.setdefault((folder, match[1]), {}).setdefault(int(match[2]), []).append(path)
            else:
                strays.append(path)
    return by_case, strays
