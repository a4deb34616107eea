"""What a dataset is: its input channels (name, CT or MR), its labels, and what the network learns.

A :class:`Task` is read by the whole pipeline: the datamodule (how many channels, how each is
normalised, which label values are allowed), the module (loss, outputs, metric names), prediction (how
outputs become a label map in the dataset's own values), evaluation and the export sidecar. It is saved
in every checkpoint (``datamodule_hyper_parameters["task"]``), so predict and evaluate need nothing else.

The network learns either

- ``regions``: overlapping sets of label values, one sigmoid output each (BraTS: TC, WT, ET), or
- ``classes``: mutually exclusive labels, softmax over background + one output per class, argmax at
  inference (organs).

Presets (:data:`PRESETS`) name the brain-tumour datasets; any other dataset gets its task from its
``dataset.json`` (:func:`task_from_dataset_json`) or from the config (:func:`get_task` with a dict)::

    data:
      init_args:
        task:
          name: abdomen
          channels: [{name: CT, kind: CT, window: [-175, 250]}]
          labels: {liver: 1, spleen: 2}
          classes: [liver, spleen]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

KINDS = ("MR", "CT")
MODALITIES = ("t1", "t1ce", "t2", "flair")  # channel order of every brain-tumour preset
CT_BODY_HU = -500.0  # CT voxels above this are the body (air is -1000 HU): the foreground crop for CT


@dataclass(frozen=True)
class Channel:
    """One input channel and how it is normalised.

    Attributes:
        name: what the dataset calls it (``t1ce``, ``CT``, ``ADC``...).
        kind: ``MR`` (and anything that is not CT): z-score per case over non-zero voxels; ``CT``: clip to
            ``window`` (HU), then z-score with the dataset-wide ``mean`` and ``std`` (nnU-Net's CT scheme,
            statistics of the labelled foreground); with a ``window`` but no statistics, the window is
            scaled to [0, 1] (a fixed HU window, as MONAI's BTCV recipe does).
        window: CT clip range in HU; for nnU-Net's scheme the 0.5 and 99.5 percentiles of the foreground.
        mean, std: dataset-wide foreground intensity statistics for CT (HU).
    """

    name: str
    kind: str = "MR"
    window: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        kind = str(self.kind).upper()
        if kind not in KINDS:
            raise ValueError(f"channel {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        object.__setattr__(self, "kind", kind)
        if self.window is not None:
            low, high = (float(v) for v in self.window)
            if not low < high:
                raise ValueError(
                    f"channel {self.name!r}: window {list(self.window)} must be [low, high] with low < high"
                )
            object.__setattr__(self, "window", (low, high))
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"channel {self.name!r}: give both mean and std, or neither")
        if self.std is not None and not float(self.std) > 0:
            raise ValueError(f"channel {self.name!r}: std must be > 0, got {self.std}")

    @property
    def needs_statistics(self) -> bool:
        """A CT channel with nothing to normalise by yet: the datamodule measures it on the training cases."""
        return self.kind == "CT" and self.window is None


@dataclass(frozen=True)
class Task:
    """Channels, labels and targets of one dataset (see the module docstring).

    Attributes:
        name: short identifier (a preset's name, or the dataset's).
        channels: input channels in the order the network takes them.
        labels: label name -> integer value in the label files (background 0 is implied).
        regions: region name -> the label values that make it up (sigmoid outputs), or None.
        classes: label names learned as mutually exclusive classes (softmax outputs after background),
            or None. A task has regions or classes; with neither, every label is a class.
        paint: for regions, (region, value) pairs painted in this order to turn regions back into a
            label map (each later one overwrites); derived from the regions when not given.
    """

    name: str
    channels: tuple[Channel, ...]
    labels: Mapping[str, int]
    regions: Mapping[str, tuple[int, ...]] | None = None
    classes: tuple[str, ...] | None = None
    paint: tuple[tuple[str, int], ...] = field(default=())

    def __post_init__(self) -> None:
        channels = tuple(c if isinstance(c, Channel) else Channel(**c) for c in self.channels)
        if not channels:
            raise ValueError(f"task {self.name!r}: no channels")
        object.__setattr__(self, "channels", channels)
        labels = {str(k): int(v) for k, v in dict(self.labels).items()}
        if not labels or any(v <= 0 for v in labels.values()) or len(set(labels.values())) != len(labels):
            raise ValueError(f"task {self.name!r}: labels {labels} must map names to distinct values > 0")
        object.__setattr__(self, "labels", labels)
        if self.regions is not None and self.classes is not None:
            raise ValueError(f"task {self.name!r}: give regions or classes, not both")
        if self.regions is not None:
            regions = {str(k): tuple(sorted(int(v) for v in vs)) for k, vs in dict(self.regions).items()}
            for name, values in regions.items():
                unknown = [v for v in values if v not in labels.values()]
                if not values or unknown:
                    raise ValueError(f"task {self.name!r}: region {name} holds {list(values)}, labels are {labels}")
            object.__setattr__(self, "regions", regions)
            paint = tuple((str(r), int(v)) for r, v in self.paint) or _paint_order(regions)
            object.__setattr__(self, "paint", paint)
        else:
            classes = tuple(self.classes) if self.classes is not None else tuple(sorted(labels, key=labels.get))
            unknown = [c for c in classes if c not in labels]
            if unknown or not classes:
                raise ValueError(f"task {self.name!r}: classes {list(classes)} must be names of labels {list(labels)}")
            object.__setattr__(self, "classes", classes)

    # ------------------------------------------------------------------------------------ describing

    @property
    def kind(self) -> str:
        """``regions`` (sigmoid, overlapping) or ``classes`` (softmax, exclusive)."""
        return "regions" if self.regions is not None else "classes"

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of what is scored: the regions, or the foreground classes (no background)."""
        return tuple(self.regions) if self.regions is not None else tuple(self.classes)

    @property
    def in_channels(self) -> int:
        return len(self.channels)

    @property
    def out_channels(self) -> int:
        """Network outputs: one per region, or background + one per class."""
        return len(self.regions) if self.regions is not None else 1 + len(self.classes)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    @property
    def values(self) -> tuple[int, ...]:
        """All values a label file may hold, background included."""
        return (0, *sorted(self.labels.values()))

    def describe(self) -> str:
        """One line: ``brats2021: 4 MR channels (t1, ...); regions TC, WT, ET``."""
        kinds = sorted({c.kind for c in self.channels})
        return (
            f"{self.name}: {self.in_channels} {'/'.join(kinds)} channel(s) ({', '.join(self.channel_names)}); "
            f"{self.kind} {', '.join(self.outputs)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML / JSON / checkpoint hyperparameters); :func:`get_task` reads it back."""
        out: dict[str, Any] = {"name": self.name, "channels": [], "labels": dict(self.labels)}
        for channel in self.channels:
            out["channels"].append({k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in asdict(channel).items() if v is not None})  # fmt: skip
        if self.regions is not None:
            out["regions"] = {k: list(v) for k, v in self.regions.items()}
            out["paint"] = [list(p) for p in self.paint]
        else:
            out["classes"] = list(self.classes)
        return out

    def with_channels(self, channels: Sequence[Channel]) -> Task:
        """The same task with other channel settings (CT statistics measured on the training cases)."""
        return Task(self.name, tuple(channels), self.labels, self.regions, self.classes, self.paint)

    # ------------------------------------------------------------------------------------ label maps

    def unexpected_values(self, label: np.ndarray | torch.Tensor) -> list[int]:
        """Values present in ``label`` that this task does not define (sorted)."""
        found = torch.unique(torch.as_tensor(label)).tolist()
        return sorted(int(v) if float(v) == int(v) else v for v in found if v not in self.values or float(v) != int(v))

    def to_masks(self, label: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Label map [1, *spatial] or [*spatial] -> bool masks [len(outputs), *spatial], one per region or
        foreground class (what metrics score)."""
        label = torch.as_tensor(label)
        if label.ndim >= 4 and label.shape[0] == 1:
            label = label[0]
        if self.regions is not None:
            groups = [self.regions[r] for r in self.regions]
        else:
            groups = [(self.labels[c],) for c in self.classes]
        return torch.stack([torch.isin(label, torch.tensor(g, dtype=label.dtype)) for g in groups])

    def to_regions(self, label: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Label map -> float regions [R, *spatial] (the training target of a regions task)."""
        return self.to_masks(label).float()

    def to_class_index(self, label: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Label map [*spatial] (dataset values) -> class indices [*spatial] (0 background, i for classes[i-1];
        labels that are not classes count as background)."""
        label = torch.as_tensor(label)
        index = torch.zeros(label.shape, dtype=torch.uint8)
        for i, name in enumerate(self.classes, start=1):
            index[label == self.labels[name]] = i
        return index

    def from_masks(self, masks: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Binary masks [len(outputs), *spatial] -> label map [*spatial] (uint8, int16 over 255) in the
        dataset's values. Regions are painted in ``paint`` order (outermost first), classes where set."""
        masks = torch.as_tensor(masks).bool()
        label = torch.zeros(masks.shape[1:], dtype=torch.uint8 if max(self.values) < 256 else torch.int16)
        if self.regions is not None:
            for region, value in self.paint:
                label[masks[list(self.regions).index(region)]] = value
        else:
            for i, name in enumerate(self.classes):
                label[masks[i]] = self.labels[name]
        return label

    def from_regions(self, regions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Binary regions -> label map (the name brain-tumour code has always used)."""
        return self.from_masks(regions)

    def from_class_index(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Class indices [*spatial] (argmax of the outputs) -> label map in the dataset's values."""
        index = torch.as_tensor(index).long()
        lookup = torch.tensor([0, *(self.labels[c] for c in self.classes)], dtype=torch.int64)
        label = lookup[index]
        return label.to(torch.uint8 if max(self.values) < 256 else torch.int16)


def _paint_order(regions: Mapping[str, tuple[int, ...]]) -> tuple[tuple[str, int], ...]:
    """Largest region first; each paints the smallest of its values no region inside it holds.

    BraTS 2021 gives WT -> 2, TC -> 1, ET -> 4, so a label map written from predicted regions has the
    dataset's own sub-region values. A region whose values are all held by regions inside it paints nothing.
    """
    order = sorted(regions, key=lambda r: -len(regions[r]))
    paint = []
    for name in order:
        inner = {v for other in regions if other != name and set(regions[other]) < set(regions[name])
                 for v in regions[other]}  # fmt: skip
        own = sorted(set(regions[name]) - inner)
        if own:
            paint.append((name, own[0]))
    return tuple(paint)


def _mr(*names: str) -> tuple[Channel, ...]:
    return tuple(Channel(n, "MR") for n in names)


PRESETS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("brats2021", _mr(*MODALITIES), {"necrotic": 1, "edema": 2, "enhancing": 4},
             {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}),
        # BraTS 2023 and later GLI, MEN and MET: ET written as 3
        Task("brats2023", _mr(*MODALITIES), {"necrotic": 1, "edema": 2, "enhancing": 3},
             {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}),
        # MSD Task01_BrainTumour (and nnU-Net's conversion of it)
        Task("msd", _mr(*MODALITIES), {"edema": 1, "non-enhancing": 2, "enhancing": 3},
             {"TC": (2, 3), "WT": (1, 2, 3), "ET": (3,)}),
        # BraTS 2024 adult glioma, post-treatment: the resection cavity is label 4 and a fourth region
        Task("brats2024-gli-post", _mr(*MODALITIES), {"NETC": 1, "SNFH": 2, "ET": 3, "RC": 4},
             {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,), "RC": (4,)}),
        # BraTS-PEDs 2024: 1 enhancing, 2 non-enhancing, 3 cystic component, 4 edema; TC paints as NET
        Task("brats2024-ped", _mr(*MODALITIES), {"ET": 1, "NET": 2, "CC": 3, "ED": 4},
             {"TC": (1, 2, 3), "WT": (1, 2, 3, 4), "ET": (1,)}),
    )
}  # fmt: skip
ALIASES = {"brats2018": "brats2021", "brats2020": "brats2021", "brats-gli": "brats2023", "brats-men": "brats2023",
           "brats-met": "brats2023", "msd-task01": "msd", "brats-ped": "brats2024-ped"}  # fmt: skip


def get_task(spec: str | Mapping[str, Any] | Task) -> Task:
    """A :class:`Task` from a preset name, a dict (``Task.to_dict`` / the config form) or a Task.

    Raises ``ValueError`` naming the presets for an unknown name, or what is wrong with a dict.
    """
    if isinstance(spec, Task):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        key = ALIASES.get(key, key)
        if key not in PRESETS:
            raise ValueError(
                f"unknown task {spec!r}; choose a preset ({', '.join(PRESETS)}) or give the task as a dict"
            )
        return PRESETS[key]
    if not isinstance(spec, Mapping):
        raise ValueError(f"a task is a preset name or a dict, found {type(spec).__name__}")
    spec = dict(spec)
    unknown = sorted(set(spec) - {"name", "channels", "labels", "regions", "classes", "paint"})
    if unknown:
        raise ValueError(f"task: unknown keys {unknown}; a task has name, channels, labels, regions or classes")
    if "labels" not in spec or "channels" not in spec:
        raise ValueError("task: needs 'channels' (e.g. [{name: CT, kind: CT}]) and 'labels' (e.g. {liver: 1})")
    channels = [c if isinstance(c, Mapping) else {"name": str(c), "kind": guess_kind(str(c))} for c in spec["channels"]]
    try:
        return Task(
            name=str(spec.get("name", "custom")),
            channels=tuple(Channel(**dict(c)) for c in channels),
            labels=spec["labels"],
            regions=spec.get("regions"),
            classes=tuple(spec["classes"]) if spec.get("classes") is not None else None,
            paint=tuple(tuple(p) for p in spec.get("paint") or ()),
        )
    except TypeError as err:
        raise ValueError(f"task: {err}") from None


def task_for_checkpoint(data_hparams: Mapping[str, Any]) -> Task:
    """The task a checkpoint's datamodule hyperparameters record: ``task``, else the ``label_convention``
    of checkpoints written before tasks existed (brain-tumour MRI, four channels)."""
    if data_hparams.get("task"):
        return get_task(data_hparams["task"])
    return get_task(data_hparams.get("label_convention") or "brats2021")


def guess_kind(name: str) -> str:
    """``CT`` for a channel named CT (any case, ``ct_*``), else ``MR`` (per-case z-score, nnU-Net's default)."""
    return "CT" if re.fullmatch(r"ct([\s_-].*)?", str(name).strip().lower()) else "MR"
