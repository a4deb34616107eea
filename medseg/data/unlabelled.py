"""A datamodule of scans without labels, for self-supervised pre-training (``medseg pretrain``).

Cases come from any dataset layout ``medseg.data.layouts`` reads (their labels, where present, are never
loaded), or from a plain folder of volumes (``layout: folder``, or ``auto`` when the folder follows no dataset
layout): each file a case, 3-D for one channel or 4-D with the channels last, or BraTS- / nnU-Net-named
files of several channels, found as ``medseg predict`` finds its inputs. ``channels`` names them (CT or MR,
as in a task); one MR channel by default.

Batches (``monai.data.DataLoader`` collation), C channels (:mod:`medseg.data.pretext`), v in 1, 2:

- ``view_v`` float32 [B, C, *roi_size]: the masked, rotated crop the network sees;
- ``target_v`` float32 [B, C, *roi_size]: the same rotated crop before masking;
- ``rotation_v`` long [B]: its quarter turns in the X-Y plane, 0-3.

Validation cases (``val_fraction``) get the same views at every validation (seeded by the case's place).
The training stream is :class:`medseg.data.base.StepSeededSampler`'s, so a resumed run sees what an
uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from monai.data import DataLoader
from monai.transforms import Compose
from torch.utils.data import Dataset as TorchDataset

from medseg.data.base import CaseDataModule
from medseg.data.layouts import DatasetIndex, read_dataset
from medseg.data.predict_inputs import find_predict_cases
from medseg.data.pretext import pretext_transforms
from medseg.errors import LayoutError
from medseg.tasks import Task, guess_kind

FOLDER = "folder"  # the layout of a plain folder of volumes


def folder_task(channels: list[str | dict[str, Any]] | None) -> Task:
    """The task of a plain folder: its channels (names, or dicts of :class:`medseg.tasks.Channel`; one MR channel
    by default). Pre-training reads no label; a task needs one, so it names a placeholder."""
    channels = channels or [{"name": "image", "kind": "MR"}]
    channels = [c if isinstance(c, dict) else {"name": str(c), "kind": guess_kind(str(c))} for c in channels]
    return Task(name="unlabelled", channels=tuple(channels), labels={"unused": 1})


class _FixedViews(TorchDataset):
    """Case ``i`` of ``dataset`` with the random transforms reseeded from ``(seed, i)``: the same views every time."""

    def __init__(self, dataset, transform: Compose, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        self.transform.set_random_state(seed=(self.seed * 1_000_003 + index) % 2**32)
        return self.dataset[index]


class UnlabelledDataModule(CaseDataModule):
    # The typed argument list is repeated in every datamodule: LightningCLI reads each class's own signature.
    def __init__(
        self,
        data_dir: str,
        layout: str = "auto",
        channels: list[str | dict[str, Any]] | None = None,
        task: str | dict[str, Any] | None = None,
        datalist: str | None = None,
        val_fraction: float = 0.0,
        roi_size: tuple[int, int, int] = (96, 96, 96),
        pixdim: tuple[float, float, float] | None = None,
        mask_holes: tuple[int, int] = (8, 24),
        mask_size: tuple[int, int] = (8, 20),
        batch_size: int = 2,
        num_workers: int = 0,
        cache: Literal["none", "memory", "disk"] = "memory",
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            data_dir: a dataset (BraTS 2021/2023 case folders, MSD, nnU-Net raw, a datalist JSON: labels are not
                read) or a plain folder of volumes.
            layout: ``auto`` detects a dataset layout, else reads a plain folder; or force ``folder``,
                ``brats2021``, ``brats2023``, ``msd``, ``nnunet``, ``datalist``.
            channels: the channels of a plain folder, in order: names (``CT``, ``t1ce``...) or dicts
                ``{name, kind: CT|MR, window: [low, high]}`` (``medseg.tasks.Channel``); default one MR channel.
                A dataset layout takes its own.
            task: a dataset layout's task, when not its own (a preset name or a dict; only its channels matter).
            datalist: a MONAI-style datalist JSON whose paths are relative to ``data_dir``.
            val_fraction: share of cases held out to log ``val/`` losses on (0: none).
            roi_size: crop size [X, Y, Z]; X = Y (views turn in the X-Y plane); multiples of 32, 64 or more.
            pixdim: resample to this voxel spacing in mm; None keeps the native grid.
            mask_holes: fewest and most masked cubes per view.
            mask_size: smallest and largest side of a masked cube, voxels.
            batch_size: crops per step (two views each); the contrastive part needs 2 or more.
            num_workers: DataLoader worker processes (0 loads in the main process).
            cache: ``memory``, ``disk`` (in ``cache_dir``) or ``none``: what is cached is the preprocessing.
            cache_dir: folder for ``cache: disk``.
            seed: seed of the split, the order of training cases and their views.
        """
        super().__init__()
        pretext_transforms(folder_task(channels), roi_size, pixdim, mask_holes, mask_size)  # bad sizes fail here

    def _read(self) -> list[dict]:
        """Every case of ``data_dir``, its label dropped; records the task (its channels, for the checkpoint)."""
        h = self.hparams
        if h.layout != FOLDER:
            try:
                self.index = read_dataset(h.data_dir, h.layout, datalist=h.datalist, task=h.task)
            except LayoutError as err:
                if h.layout != "auto" or h.datalist:
                    raise
                self.index = self._read_folder(err)
        else:
            self.index = self._read_folder(None)
        self._record_task()
        return [{k: v for k, v in case.items() if k not in ("label", "fold")} for case in self.index.cases]

    def _read_folder(self, layout_error: LayoutError | None) -> DatasetIndex:
        task = folder_task(self.hparams.channels)
        try:
            cases = find_predict_cases([self.hparams.data_dir], task.channel_names)
        except LayoutError as err:
            raise (layout_error or err) from None
        if not cases:
            raise layout_error or LayoutError(f"{self.hparams.data_dir}: holds no volumes")
        return DatasetIndex(FOLDER, task, Path(self.hparams.data_dir), cases)

    def transform(self, train: bool) -> Compose:
        """The two views of a random crop (:mod:`medseg.data.pretext`), for training and validation alike."""
        h = self.hparams
        return pretext_transforms(self.task, h.roi_size, h.pixdim, h.mask_holes, h.mask_size)

    def _drop_last(self, n_train: int) -> bool:
        return n_train > self.hparams.batch_size  # a last batch of 1 crop has nothing to contrast with

    def _eval_loader(self, cases: list[dict]) -> DataLoader:
        transform = self.transform(train=False)
        dataset = _FixedViews(self._dataset(cases, transform), transform, self.hparams.seed)
        return DataLoader(dataset, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.splits["val"]) if self.splits["val"] else []
