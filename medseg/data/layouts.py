"""Dataset layouts: a dataset folder or datalist JSON, read as it comes, into a list of case dicts.

The readers look at folder listings, file names and JSON files only; voxel data is never loaded here
(``medseg.data.predict_inputs`` finds the cases to predict on).

Layouts, told apart by :func:`detect_layout`:

- ``brats2021``: ``root/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018-2021), labels 1, 2, 4.
- ``brats2023``: ``root/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (BraTS-GLI-, -MEN-, -MET-, -PED-,
  -SSA-... of BraTS 2023 and later), labels 1, 2, 3.
- ``msd``: any Medical Segmentation Decathlon task, ``dataset.json`` + ``imagesTr/<case>.nii.gz`` (3-D for
  one channel, 4-D with the channels on the last axis, named by dataset.json ``modality``) + ``labelsTr/``
  + optional ``imagesTs/``.
- ``nnunet``: nnU-Net raw, ``dataset.json`` (``channel_names``, ``labels``) + ``imagesTr/<case>_0000.nii.gz``
  ... + ``labelsTr/<case>.nii.gz`` + optional ``imagesTs/``; any channels and labels, region-based too.
- ``datalist``: a MONAI-style JSON ``{"training": [{"image": ..., "label": ..., "fold": k}], "validation":
  [...], "modality": {...}, "labels": {...}}`` (MSD's and BTCV's ``dataset_0.json``).

Every reader returns case dicts as ``medseg.data.cases`` describes them, and the dataset's task
(:mod:`medseg.tasks`): a BraTS layout its preset, a JSON-described dataset the task its ``modality`` /
``channel_names`` and ``labels`` give, unless one is passed (``task=``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.data.cases import (
    _BRATS_NAMING,
    _brats_style,
    _brats_styles,
    _case,
    _case_folders,
    _data_path,
    _describe,
    _image_files,
    _listing,
    _load_json_object,
    _named_modality,
    _nnunet_files,
    _stem,
    _unique,
    dataset_channels,
)
from medseg.data.guess_convention import _convention_from_names, task_from_labels
from medseg.errors import CaseError, LayoutError
from medseg.tasks import MODALITIES, PRESETS, Channel, Task, get_task

LAYOUTS = ("brats2021", "brats2023", "msd", "nnunet", "datalist")


_TRIED = (
    "brats2021 (<case>/<case>_t1.nii.gz ...), brats2023 (<case>/<case>-t1n.nii.gz ...), "
    "msd and nnunet (dataset.json + imagesTr/), datalist (a .json file)"
)


_DATALIST_SECTIONS = ("training", "validation", "testing", "test")


@dataclass
class DatasetIndex:
    """The cases of one dataset, with the layout they were read from and their task."""

    layout: str
    task: Task
    root: Path
    cases: list[dict]

    @property
    def convention(self) -> Task:
        """The task (older code calls its label part the label convention)."""
        return self.task

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
        # nnU-Net v1 also names channels under "modality", but splits them into <case>_0000 files; its
        # "training" list names images that do not exist as such, MSD's names the files themselves
        listed = [e.get("image") for e in meta.get("training") or [] if isinstance(e, dict)]
        if listed and all(isinstance(p, str) and (root / p).is_file() for p in listed):
            return "msd"
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
    task: str | dict | Task | None = None,
) -> DatasetIndex:
    """Read a dataset folder (or datalist JSON) into a :class:`DatasetIndex`.

    Args:
        root: the dataset folder; for a datalist, the data root its paths are relative to (default: the
            JSON's folder), or the datalist ``.json`` itself.
        layout: ``"auto"`` to detect it, or one of ``LAYOUTS`` to force it (a folder that does not follow
            the forced layout is a ``LayoutError`` saying what it looks like instead).
        label_convention: name of a preset (``brats2021``, ``brats2023``, ``msd``...): the older name of ``task``.
        datalist: path of a datalist JSON (absolute, relative to the working folder, or to ``root``).
        task: the task (a preset name, a dict or a Task); overrides the layout's preset or the one its JSON
            describes. Its channel count must match the dataset's.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose 'auto' or one of {', '.join(LAYOUTS)}")
    try:
        spec = task if task is not None else label_convention
        override = get_task(spec) if spec else None
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


def _task(found: tuple[Channel, ...], detect, override: Task | None, source: Path) -> Task:
    """``override`` when given (its channel count checked against the dataset's), else ``detect()``."""
    if override is None:
        return detect()
    if override.in_channels != len(found):
        raise LayoutError(
            f"{source}: the dataset has {len(found)} channel(s) ({', '.join(c.name for c in found)}); "
            f"task {override.name} takes {override.in_channels} ({', '.join(override.channel_names)})"
        )
    return override


def _read_brats(root: Path, layout: str, override: Task | None) -> DatasetIndex:
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
    task = _task(PRESETS[layout].channels, lambda: PRESETS[layout], override, root)
    return DatasetIndex(layout, task, root, _unique(cases, root))


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


def _json_task(meta: dict, key: str, source: Path, override: Task | None, name: str) -> tuple[Task, list[int]]:
    """The task of a JSON-described dataset and the file channel numbers in its channel order."""
    if override is not None and not isinstance(meta.get(key), dict):  # the task names the channels
        return override, None
    channels, order = dataset_channels(meta.get(key), source, key)
    detect = lambda: task_from_labels(meta.get("labels"), channels, str(meta.get("name") or name), source, meta)  # noqa: E731
    return _task(channels, detect, override, source), order


def _read_msd(root: Path, override: Task | None) -> DatasetIndex:
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise LayoutError(f"{root}: no dataset.json (an MSD folder holds dataset.json, imagesTr/ and labelsTr/)")
    meta = _load_json_object(meta_path)
    task, order = _json_task(meta, "modality", meta_path, override, root.name)
    order = order or list(range(task.in_channels))
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
    return DatasetIndex("msd", task, root, sorted(cases, key=lambda c: c["case_id"]))


def _read_nnunet(root: Path, override: Task | None) -> DatasetIndex:
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise LayoutError(f"{root}: no dataset.json (an nnU-Net raw folder holds dataset.json, imagesTr/, labelsTr/)")
    meta = _load_json_object(meta_path)
    key = "channel_names" if "channel_names" in meta else "modality"  # nnU-Net v2 / v1
    task, order = _json_task(meta, key, meta_path, override, root.name)
    order = order or list(range(task.in_channels))
    ending = meta.get("file_ending", ".nii.gz")
    by_folder, strays = _nnunet_files(root, ending)
    if not by_folder:
        raise LayoutError(f"{root}: no nnU-Net images <case>_0000{ending} in imagesTr/ or imagesTs/")
    if strays:
        raise CaseError(f"not named <case>_XXXX{ending} as nnU-Net images are", path=strays[0])
    cases = []
    for (folder, case_id), files in sorted(by_folder.items()):
        for number, paths in sorted(files.items()):
            if number not in order:
                raise CaseError(f"channel {number:04d} is not in dataset.json {key}", case_id, paths[0])
        missing = [f"{case_id}_{n:04d}{ending} ({c.name})" for n, c in zip(order, task.channels) if n not in files]
        if missing:
            raise CaseError(f"missing the image {', '.join(missing)}", case_id, folder)
        label = None
        if folder.name == "imagesTr":
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.is_file():
                raise CaseError(f"no label labelsTr/{label.name}", case_id, folder)
        cases.append(_case(case_id, [str(files[n][0]) for n in order], label))
    cases = _unique(cases, root)
    return DatasetIndex("nnunet", task, root, sorted(cases, key=lambda c: c["case_id"]))


def _read_datalist_layout(root: Path, override: Task | None) -> DatasetIndex:
    if not (root / "dataset.json").is_file():
        raise LayoutError(f"{root}: layout 'datalist' needs a datalist JSON: pass datalist= or the .json path as root")
    return _read_datalist(root / "dataset.json", root, override)


def _read_datalist(path: Path, root: Path, override: Task | None) -> DatasetIndex:
    """MONAI-style datalist: paths relative to ``root``; brain-tumour image lists reordered to MODALITIES by
    file suffix; channels and labels from the JSON's ``modality`` and ``labels`` where it has them."""
    if not path.is_file():
        raise LayoutError(f"{path}: no such datalist file")
    meta = _load_json_object(path)
    if not any(isinstance(meta.get(s), list) for s in _DATALIST_SECTIONS):
        raise LayoutError(f"{path}: not a datalist: expected a 'training', 'validation' or 'testing' list of cases")
    task, order = None, None
    if override is not None or (isinstance(meta.get("labels"), dict) and isinstance(meta.get("modality"), dict)):
        task, order = _json_task(meta, "modality", path, override, path.parent.name)
    cases = []
    for section in _DATALIST_SECTIONS:
        for i, entry in enumerate(meta.get(section) or []):
            cases.append(_datalist_case(entry, f"{section}[{i}]", root, path, meta, task, order))
    cases = _unique(cases, path)
    if task is None:  # brain-tumour files named by modality, no labels in the JSON: the case names tell
        task = override or _convention_from_names(cases, path)
    return DatasetIndex("datalist", task, root, cases)


def _datalist_case(entry: Any, where: str, root: Path, source: Path, meta: dict, task, order) -> dict:
    entry = entry if isinstance(entry, dict) else {"image": entry}
    image = entry.get("image")
    channel_order = None
    if isinstance(image, str):  # one file: 3-D for one channel, or 4-D with the channels named by "modality"
        case_id = _stem(image)
        if order is None:  # one channel needs no naming; several do
            several = task is None or task.in_channels > 1
            order = dataset_channels(meta.get("modality"), source, "modality")[1] if several else [0]
        image, channel_order = _data_path(root, image, where, source, case_id), order
    elif isinstance(image, list) and image and all(isinstance(p, str) for p in image):
        parsed = [_named_modality(Path(p).name) for p in image]
        if task is not None and (tuple(task.channel_names) != MODALITIES or None in parsed):
            case_id = _stem(image[0])
            if len(image) != task.in_channels:
                names = ", ".join(task.channel_names)
                problem = f"{where}: {len(image)} images; the task has {task.in_channels} channels ({names})"
                raise CaseError(problem, case_id, source)
            image = [_data_path(root, p, where, source, case_id) for p in image]  # in the JSON's channel order
        else:
            case_id, image = _modality_files(image, parsed, where, root, source)
    else:
        raise CaseError(f"{where}: 'image' must be a path or a list of paths, found {image!r}", path=source)
    label, fold = entry.get("label"), entry.get("fold")
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
        raise CaseError(f"{where}: fold must be an integer, found {fold!r}", case_id, source)
    label = None if label is None else _data_path(root, label, where, source, case_id)
    return _case(case_id, image, label, fold, channel_order)


def _modality_files(image: list[str], parsed: list, where: str, root: Path, source: Path) -> tuple[str, list[str]]:
    """Brain-tumour files named by modality (``_t1ce``, ``-t2f``...) -> (case id, paths in MODALITIES order)."""
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
    return case_id, [_data_path(root, by_modality[m], where, source, case_id) for m in MODALITIES]


_READERS = {
    "brats2021": lambda root, override: _read_brats(root, "brats2021", override),
    "brats2023": lambda root, override: _read_brats(root, "brats2023", override),
    "msd": _read_msd,
    "nnunet": _read_nnunet,
    "datalist": _read_datalist_layout,
}
