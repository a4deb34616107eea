"""The case dict every reader returns, the modality names, and the file-name and JSON helpers of the readers.

A case dict holds, whatever the layout::

    case_id        str
    image          list[str]: one file per modality in MODALITIES order (t1, t1ce, t2, flair),
                   or str: one 4-D file (MSD)
    channel_order  list[int], only with a 4-D file: where t1, t1ce, t2, flair sit on the file's last axis
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

MODALITIES = ("t1", "t1ce", "t2", "flair")  # channel order of every model medseg trains


# Lower-case modality name -> canonical; looked up with spaces, "-" and "_" removed (T1-Gd -> t1gd).
MODALITY_ALIASES: dict[str, str] = {
    **dict.fromkeys(("t1", "t1n", "t1w", "t1native"), "t1"),
    **dict.fromkeys(("t1ce", "t1c", "t1gd", "t1wce", "t1post", "t1contrast"), "t1ce"),
    **dict.fromkeys(("t2", "t2w"), "t2"),
    **dict.fromkeys(("flair", "t2f", "t2flair"), "flair"),
}

# BraTS folder layouts: separator before the file suffix, and the suffix of each canonical modality.


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


def _channel_order(meta: dict, source: Path) -> list[int]:
    """Where t1, t1ce, t2, flair sit on the last axis of 4-D images, from the JSON's ``modality``."""
    if not isinstance(meta.get("modality"), dict):
        raise LayoutError(
            f"{source}: no 'modality' entry, so which channel of the 4-D images is which is unknown "
            f'(expected e.g. {{"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}})'
        )
    channels = _map_channels(meta["modality"], source, "modality")
    return [channels[m] for m in MODALITIES]


def _unique(cases: list[dict], source: str | Path) -> list[dict]:
    """``cases`` unchanged; a ``LayoutError`` naming both files if a case id appears twice."""
    seen: dict[str, dict] = {}
    for case in cases:
        first = seen.setdefault(case["case_id"], case)
        if first is not case:
            files = [c["image"] if isinstance(c["image"], str) else c["image"][0] for c in (first, case)]
            raise LayoutError(f"{source}: case {case['case_id']} appears twice ({files[0]} and {files[1]})")
    return cases
