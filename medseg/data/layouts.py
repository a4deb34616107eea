"""Dataset layouts: a dataset folder or datalist JSON, read as it comes, into a list of case dicts.

The readers look at folder listings, file names and JSON files only; voxel data is never loaded here
(``medseg.data.predict_inputs`` finds the cases to predict on).

Layouts, told apart by :func:`detect_layout`:

- ``brats2021``: ``root/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018-2021), labels 1, 2, 4.
- ``brats2023``: ``root/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (BraTS-GLI-, -MEN-, -MET-, -PED-,
  -SSA-... of BraTS 2023 and later), labels 1, 2, 3.
- ``msd``: Task01_BrainTumour, ``dataset.json`` + ``imagesTr/<case>.nii.gz`` (4-D, modalities on the
  last axis, named by dataset.json ``modality``) + ``labelsTr/`` + optional ``imagesTs/``.
- ``nnunet``: nnU-Net raw, ``dataset.json`` (``channel_names``, ``labels``) + ``imagesTr/<case>_0000.nii.gz``
  ... + ``labelsTr/<case>.nii.gz`` + optional ``imagesTs/``.
- ``datalist``: a MONAI-style JSON ``{"training": [{"image": [...], "label": ..., "fold": k}], ...}``.

Every reader returns case dicts as ``medseg.data.cases`` describes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.data.cases import (
    _NNUNET_NAME,
    MODALITIES,
    _case,
    _channel_order,
    _data_path,
    _image_files,
    _is_hidden,
    _load_json_object,
    _map_channels,
    _named_modality,
    _stem,
    _unique,
)
from medseg.data.guess_convention import _convention_from_labels, _convention_from_names
from medseg.data.labels import BRATS2021, BRATS2023, MSD, LabelConvention, get_convention
from medseg.errors import CaseError, LayoutError

LAYOUTS = ("brats2021", "brats2023", "msd", "nnunet", "datalist")


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
        image = [_brats_file(folder, stems, sep, suffixes[m], m) for m in MODALITIES]
        cases.append(_case(folder.name, image, label=_brats_file(folder, stems, sep, "seg", None)))
    return DatasetIndex(layout, override or _DEFAULT_CONVENTION[layout], root, _unique(cases, root))


def _brats_file(folder: Path, stems: dict[str, list[Path]], sep: str, suffix: str, modality: str | None) -> str | None:
    """The one file ``<case><sep><suffix>`` of a BraTS case folder; None if absent and optional (``modality`` None)."""
    paths = stems.get(f"{folder.name}{sep}{suffix}", [])
    if len(paths) > 1:
        raise CaseError(f"two {suffix} files: {', '.join(p.name for p in paths)}", folder.name, folder)
    if not paths and modality:
        found = ", ".join(sorted(p.name for ps in stems.values() for p in ps)[:6])
        expected = f"{folder.name}{sep}{suffix}.nii.gz"
        raise CaseError(f"missing the {modality} image {expected} (found: {found})", folder.name, folder)
    return str(paths[0]) if paths else None


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
        raise LayoutError(f'{meta_path}: no \'channel_names\' naming the input channels, e.g. {{"0": "T1", ...}}')
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
        missing = [f"{case_id}_{channels[m]:04d}{ending} ({m})" for m in MODALITIES
                   if channels[m] not in files]  # fmt: skip
        if missing:
            raise CaseError(f"missing the image {', '.join(missing)}", case_id, folder)
        label = None
        if folder.name == "imagesTr":
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.is_file():
                raise CaseError(f"no label labelsTr/{label.name}", case_id, folder)
        image = [str(files[channels[m]][0]) for m in MODALITIES]
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
        missing = [m for m in MODALITIES if m not in by_modality]
        if missing:
            raise CaseError(f"{where}: no {', '.join(missing)} image among {image}", case_id, source)
        image = [_data_path(root, by_modality[m], where, source, case_id) for m in MODALITIES]
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
