"""Cases to predict on, found from the files and folders given on the command line (no label needed)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from medseg.data.cases import (
    _NNUNET_NAME,
    _case,
    _image_files,
    _is_hidden,
    _load_json_object,
    _map_channels,
    _named_modality,
    _split_suffix,
    _unique,
    canonical_modality,
    dataset_channels,
)
from medseg.errors import CaseError, LayoutError
from medseg.io import VOLUME_SUFFIXES, read_header
from medseg.tasks import MODALITIES


def find_predict_cases(inputs: Sequence[str | Path], channels: Sequence[str] = MODALITIES) -> list[dict]:
    """Cases to predict (label None), sorted by case id, from files and folders given on the command line.

    ``channels`` are the task's channel names (what the model takes). For any other set than the four
    brain-tumour modalities (below), a case is nnU-Net-style ``<case>_0000`` ... files (one per channel,
    in the task's order), a single image (3-D for one channel, 4-D with the channels on its last axis,
    ordered by a ``dataset.json`` beside it), or, for one channel, a folder of DICOM files.

    Each input may be: modality files of one case named BraTS-style (``<case>_t1ce``, ``<case>-t2f``...) or
    nnU-Net-style (``<case>_0000`` ... ``_0003``); a case folder; a folder of case folders; a flat folder of
    such files (nnU-Net ``imagesTs/``); a 4-D image with the modalities on its last axis; or a mix.
    Files ending in ``_seg``/``-seg`` are skipped. Image files: ``.nii.gz``, ``.nii``, ``.nrrd``,
    ``.nhdr``, ``.mha``, ``.mhd``; DICOM: a case folder holding one series sub-folder per modality
    (``t1/``, ``t1ce/``, ``t2/``, ``flair/`` of ``.dcm`` files), or a folder of such case folders.

    Channel order of ``_000K`` files and of 4-D images comes from a ``dataset.json`` beside them or in the
    folder above (nnU-Net ``channel_names`` or MSD ``modality``); without one it is ASSUMED to be canonical,
    t1, t1ce, t2, flair. Note that MSD data and nnU-Net's own BraTS conversion do not use that order: give
    their dataset.json.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if tuple(channels) != MODALITIES:
        return _find_other_cases(inputs, tuple(channels))
    files: dict[str, Path] = {}  # the same file given twice (a folder and a file in it) counts once
    dicom_cases = []
    for item in map(Path, inputs):
        if item.is_dir() and (dicom := _dicom_cases(item)):
            dicom_cases += dicom
            continue
        if item.is_dir():
            found = _predict_folder_files(item)
        elif item.is_file():
            if _split_suffix(item.name) is None:
                raise LayoutError(f"{item}: not an image file (expected {', '.join(VOLUME_SUFFIXES)})")
            found = [item]
        else:
            raise LayoutError(f"{item}: no such file or folder")
        files.update((os.path.abspath(p), Path(os.path.abspath(p))) for p in found)
    if not files and not dicom_cases:
        raise LayoutError("no inputs to predict on")
    cases = _group_predict_files(sorted(files.values())) + dicom_cases
    return sorted(_unique(cases, "the prediction inputs"), key=lambda c: c["case_id"])


def _dicom_case(folder: Path) -> dict | None:
    """A case folder of DICOM series, one sub-folder per modality named by it (``t1/``, ``T1ce/``, ``flair/``...)."""
    series = {canonical_modality(sub.name): sub for sub in folder.iterdir() if sub.is_dir() and not _is_hidden(sub)}
    series.pop(None, None)
    if not series or not any(any(f.suffix.lower() == ".dcm" for f in sub.iterdir()) for sub in series.values()):
        return None
    missing = [m for m in MODALITIES if m not in series]
    if missing:
        raise CaseError(
            f"DICOM case folder lacks the {', '.join(missing)} series (one sub-folder per modality)",
            folder.name,
            folder,
        )
    return _case(folder.name, [str(series[m].absolute()) for m in MODALITIES], label=None)


def _dicom_cases(folder: Path) -> list[dict]:
    """DICOM cases: ``folder`` itself, or its sub-folders (a folder of DICOM case folders)."""
    if case := _dicom_case(folder):
        return [case]
    subs = [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and not _is_hidden(sub)]
    return [case for sub in subs if (case := _dicom_case(sub))]


def _predict_folder_files(folder: Path) -> list[Path]:
    stems = _image_files(folder)
    if not stems:  # a folder of case folders
        stems = {}
        for sub in sorted(folder.iterdir()):
            if sub.is_dir() and not _is_hidden(sub) and not sub.name.startswith("labels"):  # labelsTr/ of nnU-Net, MSD
                stems.update({str(sub / s): paths for s, paths in _image_files(sub).items()})
    if not stems:
        raise LayoutError(f"{folder}: no image files ({', '.join(VOLUME_SUFFIXES)}) in it or in its sub-folders")
    return [p for paths in stems.values() for p in paths]


def _group_predict_files(files: list[Path]) -> list[dict]:
    groups: dict[tuple[Path, str, str], dict] = {}  # (folder, case id, naming) -> modality or channel -> paths
    cases = []
    for path in files:
        stem = _split_suffix(path.name)[0]
        if re.search(r"[_-]seg$", stem, re.IGNORECASE):
            continue
        if match := _NNUNET_NAME.fullmatch(stem):
            groups.setdefault((path.parent, match[1], "nnunet"), {}).setdefault(int(match[2]), []).append(path)
        elif named := _named_modality(path.name):
            groups.setdefault((path.parent, named[0], "named"), {}).setdefault(named[1], []).append(path)
        else:
            cases.append(_predict_4d_case(path, stem))
    for (folder, case_id, naming), found in groups.items():
        for key, paths in found.items():
            if len(paths) > 1:
                raise CaseError(f"two files for {key}: {', '.join(p.name for p in paths)}", case_id, folder)
        if naming == "nnunet":
            channels = _nearby_channels(folder)  # canonical modality -> channel number
            for number in found:
                if number not in channels.values():
                    problem = f"unexpected channel file {found[number][0].name} (channels are 0-3)"
                    raise CaseError(problem, case_id, folder)
            found = {m: found[channels[m]] for m in MODALITIES if channels[m] in found}
        missing = [m for m in MODALITIES if m not in found]
        if missing:
            names = ", ".join(p.name for paths in found.values() for p in paths)
            raise CaseError(f"missing the {', '.join(missing)} image (found: {names})", case_id, folder)
        image = [str(found[m][0]) for m in MODALITIES]
        cases.append(_case(case_id, image, label=None))
    return cases


def _predict_4d_case(path: Path, case_id: str) -> dict:
    shape = _image_shape(path, case_id)
    if len(shape) != 4 or shape[-1] != len(MODALITIES):
        raise CaseError(
            f"cannot tell its modality from the name (expected a suffix like _t1ce, -t1c or _0001) and it is "
            f"not a 4-channel image (shape {shape})",
            case_id,
            path,
        )
    channels = _nearby_channels(path.parent)
    order = [channels[m] for m in MODALITIES]
    return _case(case_id, str(path), label=None, channel_order=order)


def _nearby_channel_names(folder: Path) -> tuple[dict, Path, str] | None:
    """The channel names of the first dataset.json in ``folder`` or above it that has them (nnU-Net
    ``channel_names`` or MSD ``modality``), with that file and the key; None if there is none."""
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            meta = _load_json_object(candidate)
            key = "channel_names" if "channel_names" in meta else "modality"
            if isinstance(meta.get(key), dict):
                return meta[key], candidate, key
    return None


def _nearby_channels(folder: Path) -> dict[str, int]:
    """Canonical modality -> channel number, from a dataset.json in ``folder`` or above it, else canonical."""
    found = _nearby_channel_names(folder)
    return _map_channels(*found) if found else {m: i for i, m in enumerate(MODALITIES)}


def _image_shape(path: Path, case_id: str) -> tuple[int, ...]:
    """Shape read from the header only (a 4-D image with 4 channels reads as (X, Y, Z, 4))."""
    try:
        return read_header(path)[0]
    except Exception as err:
        raise CaseError(f"cannot read the image header: {err}", case_id, path) from None


def _find_other_cases(inputs: Sequence[str | Path], channels: tuple[str, ...]) -> list[dict]:
    """Cases of a task whose channels are not the brain-tumour modalities (see :func:`find_predict_cases`)."""
    n = len(channels)
    files: dict[str, Path] = {}
    dicom_cases = []
    for item in map(Path, inputs):
        if item.is_dir() and n == 1 and (dicom := _dicom_series_cases(item)):
            dicom_cases += dicom
        elif item.is_dir():
            files.update((os.path.abspath(p), Path(os.path.abspath(p))) for p in _predict_folder_files(item))
        elif item.is_file():
            if _split_suffix(item.name) is None:
                raise LayoutError(f"{item}: not an image file (expected {', '.join(VOLUME_SUFFIXES)})")
            files[os.path.abspath(item)] = Path(os.path.abspath(item))
        else:
            raise LayoutError(f"{item}: no such file or folder")
    if not files and not dicom_cases:
        raise LayoutError("no inputs to predict on")
    groups: dict[tuple[Path, str], dict[int, Path]] = {}
    cases = []
    for path in sorted(files.values()):
        stem = _split_suffix(path.name)[0]
        if re.search(r"[_-]seg$", stem, re.IGNORECASE):
            continue
        if match := _NNUNET_NAME.fullmatch(stem):
            groups.setdefault((path.parent, match[1]), {})[int(match[2])] = path
        else:
            cases.append(_single_file_case(path, stem, channels))
    for (folder, case_id), found in list(groups.items()):
        if max(found) >= n:  # not channel numbers (img_0012, ct_0003 of a one-channel set): each file a case
            cases += [_single_file_case(p, _split_suffix(p.name)[0], channels) for p in found.values()]
            del groups[(folder, case_id)]
    for (folder, case_id), found in groups.items():
        missing = [f"{case_id}_{k:04d} ({name})" for k, name in enumerate(channels) if k not in found]
        if missing:
            raise CaseError(f"missing the image {', '.join(missing)}", case_id, folder)
        cases.append(_case(case_id, [str(found[k]) for k in range(n)], label=None))
    cases += dicom_cases
    return sorted(_unique(cases, "the prediction inputs"), key=lambda c: c["case_id"])


def _single_file_case(path: Path, case_id: str, channels: tuple[str, ...]) -> dict:
    """One image file as a case: 3-D for a one-channel task, else 4-D with the channels on its last axis."""
    shape = _image_shape(path, case_id)
    n = len(channels)
    if n == 1 and (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 1)):
        return _case(case_id, str(path), label=None, channel_order=[0])
    if len(shape) == 4 and shape[-1] == n:
        order = list(range(n))
        found = _nearby_channel_names(path.parent)
        if found and len(found[0]) == n:
            order = dataset_channels(*found)[1]
        return _case(case_id, str(path), label=None, channel_order=order)
    expected = "a 3-D image" if n == 1 else f"a 4-D image with {n} channels or {case_id}_0000 ... _{n - 1:04d} files"
    raise CaseError(f"has shape {shape}; the model takes {n} channel(s) ({', '.join(channels)}): expected {expected}",
                    case_id, path)  # fmt: skip


def _dicom_series_cases(folder: Path) -> list[dict]:
    """One-channel DICOM: ``folder`` holding .dcm files is a case; else each sub-folder that holds them."""

    def holds_dicom(f: Path) -> bool:
        return any(p.suffix.lower() == ".dcm" for p in f.iterdir() if p.is_file())

    if holds_dicom(folder):
        return [_case(folder.name, [str(folder.absolute())], label=None)]
    subs = [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and not _is_hidden(sub)]
    return [_case(sub.name, [str(sub.absolute())], label=None) for sub in subs if holds_dicom(sub)]
