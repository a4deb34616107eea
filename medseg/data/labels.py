"""Label maps and their training targets: the brain-tumour presets by their historical names, the case-id
patterns of BraTS, and the transform from a label file to what the network learns.

What a dataset's labels mean lives in :mod:`medseg.tasks`; a "label convention" is the label part of a
:class:`medseg.tasks.Task` (``brats2021``: 1 necrotic, 2 edema, 4 enhancing -> TC, WT, ET). A task names
every label value it uses, so a label file holding any other value (ET written as 3 in a dataset read
as BraTS 2021, say) is an error, never a silently empty region.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medseg.tasks import PRESETS, Task, get_task

REGIONS = ("TC", "WT", "ET")  # the regions of the BraTS presets, in their output order

LabelConvention = Task  # a label convention is the label part of a task; the name older code imports
BRATS2021, BRATS2023, MSD = PRESETS["brats2021"], PRESETS["brats2023"], PRESETS["msd"]
CONVENTIONS = PRESETS  # every preset, by name


# Case-id prefixes that name a convention: BraTS2021_00000 (BraTS20_Training_001, ...) is BraTS 2021;
# BraTS-GLI-00000-000 (-MEN-, -MET-, -PED-, -SSA-, ...) is BraTS 2023 and later.
CASE_ID_PATTERNS = {"brats2021": re.compile(r"BraTS\d{2,4}_"), "brats2023": re.compile(r"BraTS-[A-Za-z]+-")}


def convention_of_case_id(case_id: str) -> str | None:
    """Name of the convention a BraTS case id implies (see ``CASE_ID_PATTERNS``), or None."""
    return next((name for name, pattern in CASE_ID_PATTERNS.items() if pattern.match(case_id)), None)


def get_convention(name: str | dict | Task) -> Task:
    """A task by preset name (or dict, or Task): :func:`medseg.tasks.get_task`."""
    return get_task(name)


class LabelToRegions(Transform):
    """Label map [1, *spatial] -> the training target of a task: float regions [R, *spatial] (TC, WT, ET for
    the BraTS presets) for a regions task, class indices [1, *spatial] (float) for a classes task.

    Raises ``ValueError`` naming the unexpected values when the label holds values the task does not
    define: a BraTS 2023 label (ET = 3) read as BraTS 2021 (ET = 4) fails here instead of training on an
    empty ET.
    """

    def __init__(self, convention: str | dict | Task) -> None:
        self.convention = get_convention(convention)

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        task = self.convention
        bad = task.unexpected_values(label)
        if bad:
            raise ValueError(
                f"label holds values {bad} that the {task.name} task does not define "
                f"(it uses {list(task.values)}); check the dataset layout / data.task"
            )
        if task.kind == "regions":
            target = task.to_regions(label)  # [R, *spatial]
        else:
            target = task.to_class_index(label[0] if label.ndim == 4 else label)[None].float()  # [1, *spatial]
        if isinstance(label, MetaTensor):  # keep the affine and the applied operations for inversion
            return MetaTensor(target, meta=label.meta, applied_operations=label.applied_operations)
        return target


class LabelToRegionsd(MapTransform):
    """Dictionary twin of :class:`LabelToRegions`."""

    def __init__(self, keys: KeysCollection, convention: str | dict | Task, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToRegions(convention)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
