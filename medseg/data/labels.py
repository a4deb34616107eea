"""Label conventions of brain-tumour datasets and their mapping to the regions TC, WT, ET.

Every dataset writes its tumour sub-regions with its own integers; the model always learns the three
nested evaluation regions of the BraTS challenge, in this channel order:

- TC, tumour core: necrosis + enhancing tumour (+ non-enhancing tumour where a dataset has it);
- WT, whole tumour: everything above + edema;
- ET, enhancing tumour.

A convention names every label value it uses, so a label file holding any other value (ET written as 3
in a dataset read as BraTS 2021, say) is an error, never a silently empty region.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

REGIONS = ("TC", "WT", "ET")


@dataclass(frozen=True)
class LabelConvention:
    """How one dataset family writes its label maps.

    Attributes:
        name: short identifier used in configs (``brats2021``, ``brats2023``, ``msd``).
        labels: sub-region name -> integer value in the label file (background 0 is implied).
        regions: region name (TC, WT, ET) -> the label values that make it up.
        paint_order: label values, painted in this order when turning regions back into a label map
            (each later value overwrites the earlier ones), paired with the region that paints it.
    """

    name: str
    labels: Mapping[str, int]
    regions: Mapping[str, tuple[int, ...]]
    paint_order: tuple[tuple[str, int], ...]

    @property
    def values(self) -> tuple[int, ...]:
        """All values a label file may hold, background included."""
        return (0, *sorted(self.labels.values()))

    def unexpected_values(self, label: np.ndarray | torch.Tensor) -> list[int]:
        """Values present in ``label`` that this convention does not define (sorted)."""
        found = torch.unique(torch.as_tensor(label)).tolist()
        return sorted(int(v) for v in found if v not in self.values or float(v) != int(v))

    def to_regions(self, label: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Label map [1, *spatial] or [*spatial] -> float regions [3, *spatial] (TC, WT, ET)."""
        label = torch.as_tensor(label)
        if label.ndim >= 4 and label.shape[0] == 1:
            label = label[0]
        out = [torch.isin(label, torch.tensor(self.regions[r], dtype=label.dtype)) for r in REGIONS]
        return torch.stack(out).float()

    def from_regions(self, regions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Binary regions [3, *spatial] (TC, WT, ET) -> label map [*spatial] (uint8) in this convention.

        Regions are painted from the outermost (WT) inwards, so a voxel in ET is written as enhancing
        even where a network predicted it outside TC or WT.
        """
        regions = torch.as_tensor(regions).bool()
        label = torch.zeros(regions.shape[1:], dtype=torch.uint8)
        for region, value in self.paint_order:
            label[regions[REGIONS.index(region)]] = value
        return label


BRATS2021 = LabelConvention(
    name="brats2021",
    labels={"necrotic": 1, "edema": 2, "enhancing": 4},
    regions={"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)},
    paint_order=(("WT", 2), ("TC", 1), ("ET", 4)),
)
BRATS2023 = LabelConvention(
    name="brats2023",
    labels={"necrotic": 1, "edema": 2, "enhancing": 3},
    regions={"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)},
    paint_order=(("WT", 2), ("TC", 1), ("ET", 3)),
)
MSD = LabelConvention(
    name="msd",
    labels={"edema": 1, "non-enhancing": 2, "enhancing": 3},
    regions={"TC": (2, 3), "WT": (1, 2, 3), "ET": (3,)},
    paint_order=(("WT", 1), ("TC", 2), ("ET", 3)),
)
CONVENTIONS = {c.name: c for c in (BRATS2021, BRATS2023, MSD)}


# Case-id prefixes that name a convention: BraTS2021_00000 (BraTS20_Training_001, ...) is BraTS 2021;
# BraTS-GLI-00000-000 (-MEN-, -MET-, -PED-, -SSA-, ...) is BraTS 2023 and later.
CASE_ID_PATTERNS = {"brats2021": re.compile(r"BraTS\d{2,4}_"), "brats2023": re.compile(r"BraTS-[A-Za-z]+-")}


def convention_of_case_id(case_id: str) -> str | None:
    """Name of the convention a BraTS case id implies (see ``CASE_ID_PATTERNS``), or None."""
    return next((name for name, pattern in CASE_ID_PATTERNS.items() if pattern.match(case_id)), None)


def get_convention(name: str | LabelConvention) -> LabelConvention:
    """Look a convention up by name, with a clear error for an unknown one."""
    if isinstance(name, LabelConvention):
        return name
    try:
        return CONVENTIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown label convention {name!r}; choose one of {sorted(CONVENTIONS)}") from None


class LabelToRegions(Transform):
    """Label map [1, *spatial] -> float regions [3, *spatial] (TC, WT, ET) under a convention.

    Raises ``ValueError`` naming the unexpected values when the label holds values the convention does
    not define: a BraTS 2023 label (ET = 3) read as BraTS 2021 (ET = 4) fails here instead of training on
    an empty ET.
    """

    def __init__(self, convention: str | LabelConvention) -> None:
        self.convention = get_convention(convention)

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        bad = self.convention.unexpected_values(label)
        if bad:
            raise ValueError(
                f"label holds values {bad} that the {self.convention.name} convention does not define "
                f"(it uses {list(self.convention.values)}); check the dataset layout / label_convention"
            )
        regions = self.convention.to_regions(label)  # [3, *spatial]
        if isinstance(label, MetaTensor):  # keep the affine and the applied operations for inversion
            return MetaTensor(regions, meta=label.meta, applied_operations=label.applied_operations)
        return regions


class LabelToRegionsd(MapTransform):
    """Dictionary twin of :class:`LabelToRegions`."""

    def __init__(self, keys: KeysCollection, convention: str | LabelConvention, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToRegions(convention)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
