"""Dataset layouts: a dataset folder or datalist JSON, read as it comes, into a list of case dicts.

The readers look at folder listings, file names and JSON files only; voxel data is never loaded here
(:func:`find_predict_cases` reads the header of an image whose name does not say its modality).

Layouts, told apart by :func:`detect_layout`:

- ``brats2021``: ``root/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018-2021), labels 1, 2, 4.
- ``brats2023``: ``root/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (BraTS-GLI-, -MEN-, -MET-, -PED-,
  -SSA-... of BraTS 2023 and later), labels 1, 2, 3.
- ``msd``: Task01_BrainTumour, ``dataset.json`` + ``imagesTr/<case>.nii.gz`` (4-D, modalities on the
  last axis, named by dataset.json ``modality``) + ``labelsTr/`` + optional ``imagesTs/``.
- ``nnunet``: nnU-Net raw, ``dataset.json`` (``channel_names``, ``labels``) + ``imagesTr/<case>_0000.nii.gz``
  ... + ``labelsTr/<case>.nii.gz`` + optional ``imagesTs/``.
- ``datalist``: a MONAI-style JSON ``{"training": [{"image": [...], "label": ..., "fold": k}], ...}``.

Every case dict holds, whatever the layout::

    case_id        str
    image          list[str]: one file per modality in CANONICAL_MODALITIES order (t1, t1ce, t2, flair),
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.data.labels import (
    BRATS2021,
    BRATS2023,
    CONVENTIONS,
    MSD,
    LabelConvention,
    convention_of_case_id,
    get_convention,
)
from medseg.errors import CaseError, LayoutError
from medseg.io import VOLUME_SUFFIXES, read_header

CANONICAL_MODALITIES = ("t1", "t1ce", "t2", "flair")  # channel order of every model medseg trains
LAYOUTS = ("brats2021", "brats2023", "msd", "nnunet", "datalist")

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
_DEFAULT_CONVENTION = {"brats2021": BRATS2021, "brats2023": BRATS2023, "msd": MSD}
_TRIED = (
    "brats2021 (<case>/<case>_t1.nii.gz ...), brats2023 (<case>/<case>-t1n.nii.gz ...), "
    "msd and nnunet (dataset.json + imagesTr/), datalist (a .json file)"
)
_DATALIST_SECTIONS = ("training", "validation", "testing", "test")
_NNUNET_NAME = re.compile(r"(.+)_(\d{4})")  # <case>_0000
_NAMED_MODALITY = re.compile(r"(.+)[_-]([A-Za-z0-9]+)")  # <case>_t1ce, <case>-t2f (last separator)


@dataclass
class DatasetIndex:
    """The cases of one dataset, with the layout they were read from and their label convention."""

    layout: str
    convention: LabelConvention
    root: Path
    cases: list[dict]

    def folds(self) -> list[int]:
        """Sorted distinct folds of the cases, [] if none has one."""
        return sorted({case["fold"] for case in self.cases if case.get("fold") is not None})


def canonical_modality(name: str) -> str | None:
    """Canonical modality of a channel name or file suffix (``T1w`` -> ``t1``, ``t2f`` -> ``flair``), or None."""
    return MODALITY_ALIASES.get(re.sub(r"[\s_-]", "", str(name).lower()))


# ---------------------------------------------------------------------------------------------- detection


def detect_layout(root: str | Path) -> str:
    """Name of the layout of a dataset folder or datalist file (one of ``LAYOUTS``).

    Raises ``LayoutError`` for a missing or empty folder, and for a folder matching no layout (the message
    says which layouts were tried and what the folder holds).
    """
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "datalist"
        raise LayoutError(f"{root}: is a file, not a dataset folder or a datalist .json")
    entries = _listing(root)
    if (root / "dataset.json").is_file():
        return _detect_from_dataset_json(root)
    styles = _brats_styles(root)
    matched = [layout for layout in _BRATS_NAMING if styles[layout]]
    if len(matched) == 1:
        return matched[0]
    if matched:
        raise LayoutError(
            f"{root}: mixes brats2021 case folders ({styles['brats2021'][0].name}, ...) and brats2023 ones "
            f"({styles['brats2023'][0].name}, ...); keep one layout per folder or pass layout="
        )
    jsons = [e.name for e in entries if e.suffix.lower() == ".json"]
    hint = f"; if {jsons[0]} is a datalist, pass datalist={jsons[0]!r}" if jsons else ""
    raise LayoutError(f"{root}: matches no dataset layout (tried {_TRIED}); found {_describe(entries)}{hint}")


def _detect_from_dataset_json(root: Path) -> str:
    path = root / "dataset.json"
    meta = _load_json_object(path)
    if "channel_names" in meta:
        return "nnunet"
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        # nnU-Net v1 also names channels under "modality", but splits them into <case>_0000 files
        return "nnunet" if _nnunet_files(root)[0] else "msd"
    if any(isinstance(meta.get(s), list) for s in _DATALIST_SECTIONS):
        return "datalist"
    raise LayoutError(
        f"{path}: neither nnU-Net (no 'channel_names'), MSD (no imagesTr/ folder beside it) "
        f"nor a datalist (no 'training', 'validation' or 'testing' list)"
    )


# ---------------------------------------------------------------------------------------------- reading


def read_dataset(
    root: str | Path,
    layout: str = "auto",
    label_convention: str | None = None,
    datalist: str | None = None,
) -> DatasetIndex:
    """Read a dataset folder (or datalist JSON) into a :class:`DatasetIndex`.

    Args:
        root: the dataset folder; for a datalist, the data root its paths are relative to (default: the
            JSON's folder), or the datalist ``.json`` itself.
        layout: ``"auto"`` to detect it, or one of ``LAYOUTS`` to force it (a folder that does not follow
            the forced layout is a ``LayoutError`` saying what it looks like instead).
        label_convention: name of a label convention (``brats2021``, ``brats2023``, ``msd``); overrides the
            layout's default or the one inferred from names / dataset.json labels.
        datalist: path of a datalist JSON (absolute, relative to the working folder, or to ``root``).
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose 'auto' or one of {', '.join(LAYOUTS)}")
    try:
        override = get_convention(label_convention) if label_convention else None
    except ValueError as err:
        raise LayoutError(str(err)) from None
    root = Path(os.path.abspath(root))
    if root.is_file() and root.suffix.lower() != ".json":
        raise LayoutError(f"{root}: is a file, not a dataset folder or a datalist .json")
    if datalist is not None or root.is_file():
        if layout not in ("auto", "datalist"):
            raise LayoutError(f"{datalist or root}: a datalist JSON is read as layout 'datalist', not {layout!r}")
        if datalist is None:
            return _read_datalist(root, root.parent, override)
        path = Path(datalist)
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        return _read_datalist(Path(os.path.abspath(path)), root, override)
    if layout == "auto":
        return _READERS[detect_layout(root)](root, override)
    _listing(root)  # missing / empty folder errors first
    try:
        return _READERS[layout](root, override)
    except LayoutError as err:
        try:
            detected = detect_layout(root)
        except LayoutError:
            raise err from None
        if detected == layout:
            raise
        raise LayoutError(f"{err} (layout={layout!r} was asked for; the folder looks like {detected})") from None


def _read_brats(root: Path, layout: str, override: LabelConvention | None) -> DatasetIndex:
    sep, suffixes = _BRATS_NAMING[layout]
    folders = _case_folders(root)
    if not any(_brats_style(folder, stems) == layout for folder, stems in folders):
        example = f"<case>/<case>{sep}{suffixes['t1']}.nii.gz"
        found = _describe(_listing(root))
        raise LayoutError(f"{root}: no case folder follows the {layout} naming {example}; found {found}")
    cases = []
    for folder, stems in folders:

        def find(suffix: str, modality: str | None) -> str | None:
            paths = stems.get(f"{folder.name}{sep}{suffix}", [])
            if len(paths) > 1:
                raise CaseError(f"two {suffix} files: {', '.join(p.name for p in paths)}", folder.name, folder)
            if not paths and modality:
                found = ", ".join(sorted(p.name for ps in stems.values() for p in ps)[:6])
                expected = f"{folder.name}{sep}{suffix}.nii.gz"
                raise CaseError(f"missing the {modality} image {expected} (found: {found})", folder.name, folder)
            return str(paths[0]) if paths else None

        image = [find(suffixes[m], m) for m in CANONICAL_MODALITIES]
        cases.append(_case(folder.name, image, label=find("seg", None)))
    return DatasetIndex(layout, override or _DEFAULT_CONVENTION[layout], root, _unique(cases, root))


def _read_msd(root: Path, override: LabelConvention | None) -> DatasetIndex:
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise LayoutError(f"{root}: no dataset.json (an MSD folder holds dataset.json, imagesTr/ and labelsTr/)")
    meta = _load_json_object(meta_path)
    order = _channel_order(meta, meta_path)
    cases = []
    if isinstance(meta.get("training"), list):
        for section in ("training", "test"):
            for i, entry in enumerate(meta.get(section) or []):
                entry = entry if isinstance(entry, dict) else {"image": entry}
                where = f"{section}[{i}]"
                case_id = _stem(entry.get("image", ""))
                label = entry.get("label")
                image = _data_path(root, entry.get("image"), where, meta_path, case_id)
                label = None if label is None else _data_path(root, label, where, meta_path, case_id)
                cases.append(_case(case_id, image, label, channel_order=order))
    else:
        for folder, labels in (("imagesTr", root / "labelsTr"), ("imagesTs", None)):
            stems = _image_files(root / folder) if (root / folder).is_dir() else {}
            for case_id, paths in stems.items():
                label = labels / paths[0].name if labels else None
                if label is not None and not label.is_file():
                    raise CaseError(f"no label {label.parent.name}/{label.name} for this image", case_id, paths[0])
                cases.append(_case(case_id, str(paths[0]), label, channel_order=order))
    if not cases:
        raise LayoutError(f"{root}: no images listed in dataset.json nor found in imagesTr/ or imagesTs/")
    cases = _unique(cases, meta_path)
    return DatasetIndex("msd", override or MSD, root, sorted(cases, key=lambda c: c["case_id"]))


def _read_nnunet(root: Path, override: LabelConvention | None) -> DatasetIndex:
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise LayoutError(f"{root}: no dataset.json (an nnU-Net raw folder holds dataset.json, imagesTr/, labelsTr/)")
    meta = _load_json_object(meta_path)
    key = "channel_names" if "channel_names" in meta else "modality"  # nnU-Net v2 / v1
    if not isinstance(meta.get(key), dict):
        raise LayoutError(f"{meta_path}: no 'channel_names' naming the input channels, e.g. {{\"0\": \"T1\", ...}}")
    channels = _map_channels(meta[key], meta_path, key)  # canonical modality -> channel number
    ending = meta.get("file_ending", ".nii.gz")
    by_folder, strays = _nnunet_files(root, ending)
    if not by_folder:
        raise LayoutError(f"{root}: no nnU-Net images <case>_0000{ending} in imagesTr/ or imagesTs/")
    if strays:
        raise CaseError(f"not named <case>_XXXX{ending} as nnU-Net images are", path=strays[0])
    convention = override or _convention_from_labels(meta.get("labels"), meta_path)
    cases = []
    for (folder, case_id), files in sorted(by_folder.items()):
        for number, paths in sorted(files.items()):
            if number not in channels.values():
                raise CaseError(f"channel {number:04d} is not in dataset.json {key}", case_id, paths[0])
        missing = [f"{case_id}_{channels[m]:04d}{ending} ({m})" for m in CANONICAL_MODALITIES
                   if channels[m] not in files]  # fmt: skip
        if missing:
            raise CaseError(f"missing the image {', '.join(missing)}", case_id, folder)
        label = None
        if folder.name == "imagesTr":
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.is_file():
                raise CaseError(f"no label labelsTr/{label.name}", case_id, folder)
        image = [str(files[channels[m]][0]) for m in CANONICAL_MODALITIES]
        cases.append(_case(case_id, image, label))
    cases = _unique(cases, root)
    return DatasetIndex("nnunet", convention, root, sorted(cases, key=lambda c: c["case_id"]))


def _read_datalist_layout(root: Path, override: LabelConvention | None) -> DatasetIndex:
    if not (root / "dataset.json").is_file():
        raise LayoutError(f"{root}: layout 'datalist' needs a datalist JSON: pass datalist= or the .json path as root")
    return _read_datalist(root / "dataset.json", root, override)


def _read_datalist(path: Path, root: Path, override: LabelConvention | None) -> DatasetIndex:
    """MONAI-style datalist: paths relative to ``root``; image lists reordered to canonical by file suffix."""
    if not path.is_file():
        raise LayoutError(f"{path}: no such datalist file")
    meta = _load_json_object(path)
    if not any(isinstance(meta.get(s), list) for s in _DATALIST_SECTIONS):
        raise LayoutError(f"{path}: not a datalist: expected a 'training', 'validation' or 'testing' list of cases")
    cases = []
    for section in _DATALIST_SECTIONS:
        for i, entry in enumerate(meta.get(section) or []):
            cases.append(_datalist_case(entry, f"{section}[{i}]", root, path, meta))
    cases = _unique(cases, path)
    return DatasetIndex("datalist", override or _convention_from_names(cases, path), root, cases)


def _datalist_case(entry: Any, where: str, root: Path, source: Path, meta: dict) -> dict:
    entry = entry if isinstance(entry, dict) else {"image": entry}
    image = entry.get("image")
    if isinstance(image, str):  # one 4-D file: its channels are named by a top-level "modality", as in MSD
        case_id = _stem(image)
        image, channel_order = _data_path(root, image, where, source, case_id), _channel_order(meta, source)
    elif isinstance(image, list) and image and all(isinstance(p, str) for p in image):
        parsed = [_named_modality(Path(p).name) for p in image]
        for p, found in zip(image, parsed):
            if found is None:
                problem = f"{where}: cannot tell the modality of {p!r} from its name (expected e.g. _t1ce, -t1c)"
                raise CaseError(problem, path=source)
        prefixes = {prefix for prefix, _ in parsed}
        case_id = prefixes.pop() if len(prefixes) == 1 else Path(image[0]).parent.name
        by_modality: dict[str, str] = {}
        for p, (_, modality) in zip(image, parsed):
            if modality in by_modality:
                problem = f"{where}: two {modality} images, {by_modality[modality]!r} and {p!r}"
                raise CaseError(problem, case_id, source)
            by_modality[modality] = p
        missing = [m for m in CANONICAL_MODALITIES if m not in by_modality]
        if missing:
            raise CaseError(f"{where}: no {', '.join(missing)} image among {image}", case_id, source)
        image = [_data_path(root, by_modality[m], where, source, case_id) for m in CANONICAL_MODALITIES]
        channel_order = None
    else:
        raise CaseError(f"{where}: 'image' must be a path or a list of paths, found {image!r}", path=source)
    label, fold = entry.get("label"), entry.get("fold")
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
        raise CaseError(f"{where}: fold must be an integer, found {fold!r}", case_id, source)
    label = None if label is None else _data_path(root, label, where, source, case_id)
    return _case(case_id, image, label, fold, channel_order)


_READERS = {
    "brats2021": lambda root, override: _read_brats(root, "brats2021", override),
    "brats2023": lambda root, override: _read_brats(root, "brats2023", override),
    "msd": _read_msd,
    "nnunet": _read_nnunet,
    "datalist": _read_datalist_layout,
}


# ---------------------------------------------------------------------------------------------- predict inputs


def find_predict_cases(inputs: Sequence[str | Path]) -> list[dict]:
    """Cases to predict (label None), sorted by case id, from files and folders given on the command line.

    Each input may be: modality files of one case named BraTS-style (``<case>_t1ce``, ``<case>-t2f``...) or
    nnU-Net-style (``<case>_0000`` ... ``_0003``); a case folder; a folder of case folders; a flat folder of
    such files (nnU-Net ``imagesTs/``); a 4-D image with the modalities on its last axis; or a mix.
    Files ending in ``_seg``/``-seg`` are skipped. Image files: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``;
    DICOM: a case folder holding one series sub-folder per modality (``t1/``, ``t1ce/``, ``t2/``, ``flair/``
    of ``.dcm`` files), or a folder of such case folders.

    Channel order of ``_000K`` files and of 4-D images comes from a ``dataset.json`` beside them or in the
    folder above (nnU-Net ``channel_names`` or MSD ``modality``); without one it is ASSUMED to be canonical,
    t1, t1ce, t2, flair. Note that MSD data and nnU-Net's own BraTS conversion do not use that order: give
    their dataset.json.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
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
    missing = [m for m in CANONICAL_MODALITIES if m not in series]
    if missing:
        raise CaseError(f"DICOM case folder lacks the {', '.join(missing)} series (one sub-folder per modality)", folder.name, folder)
    return _case(folder.name, [str(series[m].absolute()) for m in CANONICAL_MODALITIES], label=None)


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
            found = {m: found[channels[m]] for m in CANONICAL_MODALITIES if channels[m] in found}
        missing = [m for m in CANONICAL_MODALITIES if m not in found]
        if missing:
            names = ", ".join(p.name for paths in found.values() for p in paths)
            raise CaseError(f"missing the {', '.join(missing)} image (found: {names})", case_id, folder)
        image = [str(found[m][0]) for m in CANONICAL_MODALITIES]
        cases.append(_case(case_id, image, label=None))
    return cases


def _predict_4d_case(path: Path, case_id: str) -> dict:
    shape = _image_shape(path, case_id)
    if len(shape) != 4 or shape[-1] != len(CANONICAL_MODALITIES):
        raise CaseError(
            f"cannot tell its modality from the name (expected a suffix like _t1ce, -t1c or _0001) and it is "
            f"not a 4-channel image (shape {shape})",
            case_id,
            path,
        )
    channels = _nearby_channels(path.parent)
    order = [channels[m] for m in CANONICAL_MODALITIES]
    return _case(case_id, str(path), label=None, channel_order=order)


def _nearby_channels(folder: Path) -> dict[str, int]:
    """Canonical modality -> channel number, from a dataset.json in ``folder`` or above it, else canonical."""
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            meta = _load_json_object(candidate)
            names = meta.get("channel_names", meta.get("modality"))
            if isinstance(names, dict):
                return _map_channels(names, candidate, "channel_names" if "channel_names" in meta else "modality")
    return {m: i for i, m in enumerate(CANONICAL_MODALITIES)}


def _image_shape(path: Path, case_id: str) -> tuple[int, ...]:
    """Shape read from the header only (a 4-D image with 4 channels reads as (X, Y, Z, 4))."""
    try:
        return read_header(path)[0]
    except Exception as err:  # noqa: BLE001 - any reader failure is reported as this file's problem
        raise CaseError(f"cannot read the image header: {err}", case_id, path) from None


# ---------------------------------------------------------------------------------------------- helpers


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


def _image_files(folder: Path) -> dict[str, list[Path]]:
    """Image files directly in ``folder``, by stem (the name without its image suffix)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        split = _split_suffix(path.name)
        if split and not _is_hidden(path) and path.is_file():
            found.setdefault(split[0], []).append(path)
    return found


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
                f"(medseg trains on {', '.join(CANONICAL_MODALITIES)}; known names: {', '.join(MODALITY_ALIASES)})"
            )
        if modality in found:
            raise LayoutError(f"{source}: {key} channels {found[modality]} and {number} are both {modality}")
        found[modality] = int(number)
    missing = [m for m in CANONICAL_MODALITIES if m not in found]
    if missing:
        raise LayoutError(f"{source}: {key} has no {', '.join(missing)} channel (found {dict(names)})")
    return found


def _channel_order(meta: dict, source: Path) -> list[int]:
    """Where t1, t1ce, t2, flair sit on the last axis of 4-D images, from the JSON's ``modality``."""
    if not isinstance(meta.get("modality"), dict):
        raise LayoutError(
            f"{source}: no 'modality' entry, so which channel of the 4-D images is which is unknown "
            f"(expected e.g. {{\"0\": \"FLAIR\", \"1\": \"T1w\", \"2\": \"t1gd\", \"3\": \"T2w\"}})"
        )
    channels = _map_channels(meta["modality"], source, "modality")
    return [channels[m] for m in CANONICAL_MODALITIES]


def _unique(cases: list[dict], source: str | Path) -> list[dict]:
    """``cases`` unchanged; a ``LayoutError`` naming both files if a case id appears twice."""
    seen: dict[str, dict] = {}
    for case in cases:
        first = seen.setdefault(case["case_id"], case)
        if first is not case:
            files = [c["image"] if isinstance(c["image"], str) else c["image"][0] for c in (first, case)]
            raise LayoutError(f"{source}: case {case['case_id']} appears twice ({files[0]} and {files[1]})")
    return cases


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
