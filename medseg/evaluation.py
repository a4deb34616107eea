"""Score a folder of predicted label maps against the reference labels (in the spirit of nnU-Net's
``evaluate_folder``): Dice and HD95 per output of the task (BraTS regions TC, WT, ET; organ classes) for
every case, then mean/std/median.

Folders read:

- predictions: ``pred_dir/<case>.nii.gz``, label maps as ``medseg predict`` writes them;
- labels, any of: a flat folder ``label_dir/<case>.nii.gz``; a BraTS folder
  ``label_dir/<case>/<case>_seg.nii.gz`` (2021) or ``<case>-seg.nii.gz`` (2023); an nnU-Net/MSD dataset
  (``label_dir`` is the dataset root holding ``labelsTr/``, or ``labelsTr`` / ``labelsTs`` itself).

The task (what the label values mean, what is scored) is, in this order: the one named (a preset, a
dataset.json or datalist, a ``medseg fit`` checkpoint); the ``dataset.json`` beside the labels (in the label
folder or its parent); for BraTS data, the case ids or the label values (:func:`infer_convention`).

Cases are matched by id. A label without a prediction is *missing*: listed in the summary and counted,
never dropped in silence (the CLI then exits 1). A prediction without a label is ignored, with a note.

Files written to ``out_dir`` (default ``pred_dir``, never the label folder), each whole or not at all:

- ``metrics_per_case.csv``: ``case_id, dice_<output>..., dice_mean, hd95_<output>..., hd95_mean`` with the
  outputs named as the dataset names them (``dice_tc``, ``dice_liver``; see
  :func:`medseg.metrics.segmentation.metric_keys`), 6 significant digits; the means are over the outputs
  (for a classes task: the foreground classes); with ``lesion_wise`` also ``lesion_dice_<output>...,
  lesion_dice_mean, lesion_hd95_<output>..., lesion_hd95_mean, lesions_tp/fn/fp_<output>...``
  (:mod:`medseg.metrics.lesion`: the BraTS lesion-wise scores, by panoptica); where ``<case>_prob.nii.gz``
  lies beside a prediction, ``ece_<output>..., ece_mean`` (:mod:`medseg.inference.calibration`);
- ``metrics_summary.json``: ``{metric: {"mean", "std", "median", "n"}}`` plus the case counts, the
  missing and ignored case ids and the task used (std is the population std, ddof 0); with ``lesion_wise``
  also ``lesion_wise``: how the lesion-wise numbers were made.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from medseg.data.guess_convention import find_task_json, task_from_json
from medseg.data.labels import CONVENTIONS, REGIONS, convention_of_case_id
from medseg.errors import CaseError, LayoutError
from medseg.inference.calibration import PROB_SUFFIX, probability_metrics, without_sidecars
from medseg.inference.checkpoint import checkpoint_task
from medseg.io import NIFTI_SUFFIXES, write_atomic
from medseg.metrics.lesion import lesion_metrics, lesion_settings
from medseg.metrics.segmentation import HD95_PENALTY_MM, metric_keys, region_metrics
from medseg.tasks import ALIASES, PRESETS, Task, get_task

PER_CASE_CSV, SUMMARY_JSON = "metrics_per_case.csv", "metrics_summary.json"


def _case_id(path: Path) -> str | None:
    """``<case>.nii.gz`` -> ``<case>``; None for other files and hidden ones (MSD ships ``._*`` files)."""
    if path.name.startswith("."):
        return None
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _flat_files(folder: Path) -> dict[str, Path]:
    """Case id -> file for every ``<case>.nii.gz`` (or ``.nii``) directly in ``folder``."""
    found = {}
    for path in sorted(folder.iterdir()):
        case = _case_id(path) if path.is_file() else None
        if case is not None:
            found.setdefault(case, path)
    return found


def label_folder(label_dir: str | os.PathLike) -> Path:
    """The folder the labels are in: ``label_dir/labelsTr`` for an nnU-Net/MSD dataset root, else ``label_dir``."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise LayoutError(f"label folder {label_dir} does not exist")
    return label_dir / "labelsTr" if (label_dir / "labelsTr").is_dir() else label_dir


def find_label_files(label_dir: str | os.PathLike) -> dict[str, Path]:
    """Case id -> label file for a flat (``labelsTs/`` too), BraTS (2021/2023) or nnU-Net/MSD (``labelsTr``)
    label folder."""
    label_dir = label_folder(label_dir)
    found = _flat_files(label_dir)
    for case_dir in sorted(p for p in label_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for suffix in NIFTI_SUFFIXES:
            for name in (f"{case_dir.name}_seg{suffix}", f"{case_dir.name}-seg{suffix}"):
                if (case_dir / name).is_file():
                    found.setdefault(case_dir.name, case_dir / name)
    if not found:
        raise LayoutError(
            f"no label files in {label_dir}: expected <case>.nii.gz, <case>/<case>_seg.nii.gz (BraTS 2021), "
            f"<case>/<case>-seg.nii.gz (BraTS 2023) or a labelsTr/ folder (nnU-Net/MSD)"
        )
    return dict(sorted(found.items()))


def read_label_map(path: Path, case_id: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A NIfTI label map as stored (``[*spatial]``; a trailing axis of 1 dropped) and its image (header, affine)."""
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many kinds (truncated gzip, bad header); name the file
        raise CaseError(f"cannot read NIfTI: {exc}", case_id=case_id, path=path) from exc
    return (data[..., 0] if data.ndim == 4 and data.shape[-1] == 1 else data), image


def infer_convention(label_files: dict[str, Path]) -> tuple[Task, str]:
    """Guess the label convention of a folder: ``(convention, how it was chosen)``.

    By case ids when all of them look like BraTS 2021 (``BraTS2021_00000``) or BraTS 2023
    (``BraTS-GLI-00000-000``); else by the values of the labels: a file holding 4 is BraTS 2021. Files
    holding 3 (BraTS 2023 or MSD, which differ in what 1 and 2 mean) or no telling value leave it open:
    a ``LayoutError`` asks for the convention, naming the file.
    """
    by_name = {convention_of_case_id(case) for case in label_files}
    if len(by_name) == 1 and None not in by_name:
        name = by_name.pop()
        return get_task(name), f"case ids look like {name}"
    for case, path in label_files.items():
        values = set(np.unique(read_label_map(path, case)[0]).tolist())
        if 4 in values:
            return get_task("brats2021"), f"{path.name} holds label 4"
        if 3 in values:
            raise LayoutError(
                f"cannot tell the label convention: {path} holds labels {sorted(values)} (3 is enhancing "
                f"tumour in both BraTS 2023 and MSD/nnU-Net, which differ in 1 and 2); pass --convention "
                f"brats2023 or --convention msd (or --task with the dataset's dataset.json)"
            )
    first = next(iter(label_files.values()))
    raise LayoutError(
        f"cannot tell the task: no dataset.json beside the labels and no label file holds 3 or 4 (first: "
        f"{first}); pass --task PRESET|dataset.json|model.ckpt or --convention {'|'.join(CONVENTIONS)}"
    )


def resolve_task(spec: str | Task, label_dir: str | os.PathLike, label_files: dict[str, Path]) -> tuple[Task, str]:
    """The task to score ``label_files`` with, and how it was chosen: ``(task, how)``.

    ``spec``: a Task; a preset name; a path to a dataset.json or datalist ``*.json`` (its ``labels``, see
    :func:`medseg.data.guess_convention.task_from_json`); a ``*.ckpt`` written by ``medseg fit`` (the task
    it was trained on); or ``auto``: the JSON that names the labels in the label folder or its parent
    (:func:`medseg.data.guess_convention.find_task_json`), else the BraTS guess of :func:`infer_convention`.
    """
    if isinstance(spec, Task):
        return spec, "given"
    if spec == "auto":
        folder = label_folder(label_dir)
        found = find_task_json([folder, folder.resolve().parent])
        if found is not None:
            return task_from_json(found), f"{found} names the labels"
        return infer_convention(label_files)
    if spec.lower().endswith((".ckpt", ".pt", ".pth")):
        return checkpoint_task(spec), f"checkpoint {spec}"
    if spec.lower().endswith(".json"):
        return task_from_json(spec), f"{spec} names the labels"
    if spec.lower() not in PRESETS and spec.lower() not in ALIASES:
        raise LayoutError(
            f"unknown task {spec!r}: give a preset ({', '.join(PRESETS)}), a dataset.json / datalist .json or "
            f"a .ckpt checkpoint"
        )
    return get_task(spec), f"preset {spec}"


def _masks(data: np.ndarray, task: Task, what: str, case_id: str, path: Path, hint: str):
    """Label map -> bool masks [len(task.outputs), *spatial], refusing values the task does not define."""
    bad = task.unexpected_values(data)
    if bad:
        raise CaseError(
            f"{what} holds values {bad} that the {task.name} task does not define (it uses "
            f"{list(task.values)}{hint}); pass the right --task, --convention or --pred-convention",
            case_id=case_id,
            path=path,
        )
    return task.to_masks(data.astype(np.int64)).bool()  # [N, *spatial]


def evaluate_case(
    case_id: str,
    pred_path: Path,
    label_path: Path,
    task: Task,
    pred_task: Task,
    hd95: bool = True,
    hint: str = "",
    lesion_wise: bool = False,
    min_lesion_volume_mm3: float = 0.0,
) -> dict:
    """One row: ``case_id`` and the metrics per output of the prediction file against the label file (the
    label read in ``task``, the prediction in ``pred_task``, which has the same outputs), with ``lesion_wise``
    also those of :func:`medseg.metrics.lesion.lesion_metrics`.

    The two files must agree in shape and affine (within 1e-3); the spacing comes from the label header.
    """
    pred, pred_image = read_label_map(pred_path, case_id)
    label, label_image = read_label_map(label_path, case_id)
    if pred.shape != label.shape:
        raise CaseError(
            f"prediction {pred_path} has shape {pred.shape} but label {label_path} has shape {label.shape}",
            case_id=case_id,
        )
    if not np.allclose(pred_image.affine, label_image.affine, atol=1e-3):
        difference = np.abs(pred_image.affine - label_image.affine).max()
        raise CaseError(
            f"prediction {pred_path} and label {label_path} have different affines (up to {difference:.4g} apart: "
            f"orientation, spacing or origin differ)",
            case_id=case_id,
        )
    label_masks = _masks(label, task, "label", case_id, label_path, hint)  # [N, *spatial]
    pred_masks = _masks(pred, pred_task, "prediction", case_id, pred_path, "")  # [N, *spatial]
    spacing = [float(s) for s in label_image.header.get_zooms()[:3]]
    metrics = region_metrics(pred_masks, label_masks, spacing, with_hd95=hd95, names=task.outputs)
    if lesion_wise:
        metrics.update(lesion_metrics(pred_masks, label_masks, spacing, task.outputs, hd95, 0.5, min_lesion_volume_mm3))
    probs = pred_path.with_name(f"{case_id}{PROB_SUFFIX}.nii.gz")  # medseg predict --probabilities
    if probs.is_file():
        metrics.update(probability_metrics(probs, label_masks, pred_task, case_id))
    return {"case_id": case_id, **metrics}


def summarize(rows: list[dict]) -> dict:
    """``{metric: {"mean", "std", "median", "n"}}`` over the rows (std with ddof 0)."""
    metrics = [key for key in rows[0] if key != "case_id"] if rows else []
    summary = {}
    for key in metrics:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "median": float(np.median(values)),
            "n": len(values),
        }
    return summary


def write_results(rows: list[dict], summary: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / PER_CASE_CSV, out_dir / SUMMARY_JSON
    columns = list(rows[0]) if rows else ["case_id"]

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    write_atomic(csv_path, table.getvalue())
    write_atomic(json_path, json.dumps(summary, indent=2) + "\n")
    return csv_path, json_path


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def evaluate_folder(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    convention: str = "auto",
    pred_convention: str | None = None,
    hd95: bool = True,
    out_dir: str | os.PathLike | None = None,
    task: str | Task | None = None,
    lesion_wise: bool = False,
    min_lesion_volume_mm3: float = 0.0,
) -> tuple[list[dict], dict]:
    """Score every labelled case of ``label_dir`` that has a prediction in ``pred_dir``.

    Args:
        pred_dir: folder of predicted label maps ``<case>.nii.gz``.
        label_dir: label folder, flat, BraTS or nnU-Net/MSD (see the module docstring).
        convention: a preset the labels are in (``brats2021``, ``msd``, ... any of
            :data:`medseg.tasks.PRESETS`) or ``auto`` (see :func:`resolve_task`).
        pred_convention: preset the predictions are in; default: the labels' task. It must have the same
            outputs (BraTS 2021 labels against BraTS 2023 predictions: TC, WT, ET in both).
        hd95: also compute HD95 (the slow part).
        out_dir: where the CSV and JSON go; default ``pred_dir``. Never inside ``label_dir``.
        task: the task of the labels, instead of ``convention``: a Task, a preset name, a dataset.json or
            datalist path, or a ``.ckpt`` (see :func:`resolve_task`).
        lesion_wise: also the lesion-wise scores (:mod:`medseg.metrics.lesion`); truth lesions of at most
            ``min_lesion_volume_mm3`` are left out of them (BraTS-GLI: 50).

    Returns:
        ``(rows, summary)``: one dict per evaluated case (``case_id`` and the metrics of
        :func:`medseg.metrics.segmentation.region_metrics` for the task's outputs), and
        ``{metric: {"mean", "std", "median", "n"}}`` with ``n_cases``, ``n_missing``, ``missing`` (label
        cases without a prediction), ``ignored_predictions`` (predictions without a label), ``task``
        (:meth:`Task.to_dict`), ``task_source`` (how it was chosen), ``convention`` (the task's name),
        ``pred_convention`` and ``hd95_penalty_mm``.

    Raises:
        LayoutError: a folder is absent or empty, the task cannot be told or read, no case matches, or
            ``out_dir`` is inside the label folder.
        CaseError: a case whose files disagree in shape or affine, cannot be read, or hold values outside
            their task; names the case and the files.
        WeightsError: ``task`` names a checkpoint that cannot be read or records no task.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    out_dir = Path(out_dir) if out_dir is not None else pred_dir
    if not pred_dir.is_dir():
        raise LayoutError(f"prediction folder {pred_dir} does not exist")
    labels = find_label_files(label_dir)
    if _is_within(out_dir, label_dir):
        raise LayoutError(f"refusing to write metrics into the label folder {label_dir}; pass --out DIR")
    predictions = _flat_files(pred_dir)
    predictions = without_sidecars(predictions)  # <case>_prob, <case>_uncertainty: medseg predict's
    matched = [case for case in labels if case in predictions]
    if not matched:
        raise LayoutError(
            f"none of the {len(labels)} label cases in {label_dir} (e.g. {next(iter(labels))}) has a prediction "
            f"{pred_dir}/<case>.nii.gz ({len(predictions)} files there)"
        )

    if task is not None and convention != "auto":
        raise LayoutError(f"give the task once: --task {task} or --convention {convention}, not both")
    spec = task if task is not None else convention
    label_task, how = resolve_task(spec, label_dir, labels)
    hint = f", chosen because {how}" if spec == "auto" else ""
    pred_task = _pred_task(pred_convention, label_task)

    rows, lesion = [], {"lesion_wise": lesion_wise, "min_lesion_volume_mm3": min_lesion_volume_mm3}
    with tqdm(matched, desc="evaluate", unit="case", disable=None) as progress:  # closed before an error shows
        for case in progress:
            rows.append(
                evaluate_case(case, predictions[case], labels[case], label_task, pred_task, hd95, hint, **lesion)
            )
    summary = summarize(rows)
    summary.update(
        n_cases=len(rows),
        n_missing=len(labels) - len(matched),
        missing=[case for case in labels if case not in predictions],
        ignored_predictions=[case for case in predictions if case not in labels],
        task=label_task.to_dict(),
        task_source=how,
        convention=label_task.name,
        pred_convention=pred_task.name,
        hd95_penalty_mm=HD95_PENALTY_MM,
    )
    if lesion_wise:
        summary["lesion_wise"] = lesion_settings(min_lesion_volume_mm3=min_lesion_volume_mm3)
    write_results(rows, summary, out_dir)
    return rows, summary


def _pred_task(pred_convention: str | None, task: Task) -> Task:
    """The predictions' task: a preset with the outputs of the labels' ``task``, or ``task`` itself."""
    if pred_convention is None:
        return task
    try:
        pred_task = get_task(pred_convention)
    except ValueError as err:
        raise LayoutError(f"--pred-convention: {err}") from None
    if pred_task.outputs != task.outputs:
        raise LayoutError(
            f"predictions in {pred_task.name} ({', '.join(pred_task.outputs)}) cannot be scored against labels in "
            f"{task.name} ({', '.join(task.outputs)}): they must have the same regions or classes"
        )
    return pred_task


def summary_outputs(summary: dict) -> tuple[str, list[tuple[str, str]]]:
    """What a metrics summary scored: ``("region" | "class", [(output name, metric key), ...])``, the names
    from its ``task`` (TC, WT, ET for summaries written before tasks were recorded)."""
    task = summary.get("task") or {}
    names = list(task.get("regions") or task.get("classes") or REGIONS)
    return ("class" if task.get("classes") else "region"), list(zip(names, metric_keys(names)))


def format_table(summary: dict) -> str:
    """Plain-text table: a row per output (TC, WT, ET; liver, ...) and the mean; columns Dice and HD95 (mm)
    as mean ± std."""
    columns = [("Dice", "dice", ".4f"), ("HD95 (mm)", "hd95", ".2f")]
    columns += [("lesion Dice", "lesion_dice", ".4f"), ("lesion HD95 (mm)", "lesion_hd95", ".2f")]
    columns += [("ECE", "ece", ".4f")]
    columns = [c for c in columns if f"{c[1]}_mean" in summary]
    kind, outputs = summary_outputs(summary)
    lines = [[kind] + [f"{title} mean ± std" for title, _, _ in columns]]
    for name, key in (*outputs, ("mean", "mean")):
        cells = [name]
        for _, metric, fmt in columns:
            stats = summary[f"{metric}_{key}"]
            cells.append(f"{stats['mean']:{fmt}} ± {stats['std']:{fmt}}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    if "n_cases" in summary:
        footer = f"{summary['n_cases']} case{'s' if summary['n_cases'] != 1 else ''}"
        if summary.get("n_missing"):
            footer += f", {summary['n_missing']} MISSING (label without prediction): {list_some(summary['missing'])}"
        text.append(footer)
    return "\n".join(text)


def list_some(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
