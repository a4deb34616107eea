"""Reading and writing volumes: NIfTI through nibabel, NRRD / MetaImage / DICOM series through SimpleITK.

Everything medseg reads comes out in MONAI's convention: an array indexed [x, y, z] (i, j, k) and a
4x4 affine mapping voxel indices to world RAS millimetres, as nibabel gives for NIfTI. Everything it
writes is written to a temporary name beside the target and renamed, so an interrupted run never
leaves a half-written file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from medseg.errors import CaseError, MedsegError

NIFTI_SUFFIXES = (".nii.gz", ".nii")  # .nii.gz first: where both exist, readers prefer it
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES  # every file suffix medseg reads as a volume
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
AFFINE_ATOL = 1e-3  # mm / direction-cosine units; co-registered modalities must agree to this


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_volume_path(path: str | os.PathLike) -> bool:
    """A file medseg reads as a volume, or a folder read as a DICOM series."""
    return str(path).lower().endswith(VOLUME_SUFFIXES) or Path(path).is_dir()


def _sitk_read(path: str | os.PathLike) -> sitk.Image:
    """One volume from a file SimpleITK reads, or from a folder holding one DICOM series."""
    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise ValueError("folder holds no DICOM series")
        if len(series) > 1:
            raise ValueError(f"folder holds {len(series)} DICOM series; give one series folder per modality")
        files = reader.GetGDCMSeriesFileNames(str(path), series[0])
        _check_dicom_series(Path(path), files)
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _check_dicom_series(folder: Path, files: Sequence[str]) -> None:
    """Refuse a series that would load on the wrong grid: ``.dcm`` files GDCM left out (damaged, or another
    series), or a missing slice (ITK stacks the slices it has evenly, shifting every slice past the gap)."""
    dcm = [f for f in folder.iterdir() if f.suffix.lower() == ".dcm" and f.is_file()]
    left_out = sorted({f.name for f in dcm} - {Path(f).name for f in files})
    if left_out:
        raise ValueError(
            f"{len(left_out)} of its {len(dcm)} .dcm files are not slices of its series (damaged, or another "
            f"series), e.g. {left_out[0]}"
        )
    if len(files) < 3:
        return
    positions, normal = [], None
    for name in files:
        header = sitk.ImageFileReader()
        header.SetFileName(name)
        header.ReadImageInformation()
        try:
            position = np.array([float(v) for v in header.GetMetaData("0020|0032").split("\\")])
            if normal is None:
                row_col = np.array([float(v) for v in header.GetMetaData("0020|0037").split("\\")])
                normal = np.cross(row_col[:3], row_col[3:])
            positions.append(float(position @ normal))
        except (RuntimeError, ValueError):  # no (readable) patient position: nothing to check against
            return
    steps = np.abs(np.diff(positions))
    typical = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - typical)))
    if abs(steps[worst] - typical) > 0.05 * max(typical, 1e-3):
        raise ValueError(
            f"its slices are not evenly spaced: {steps[worst]:.2f} mm between {Path(files[worst]).name} and "
            f"{Path(files[worst + 1]).name}, {typical:.2f} mm elsewhere (a missing or duplicated slice?)"
        )


def sitk_affine(image: sitk.Image | sitk.ImageFileReader) -> np.ndarray:
    """4x4 RAS affine of a SimpleITK image or header (ITK stores direction and origin in LPS)."""
    ndim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(ndim, ndim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing()[:3])
    affine[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ affine


class SimpleITKReader(ImageReader):
    """MONAI image reader for NRRD, MetaImage (.mha/.mhd) and DICOM series folders through SimpleITK.

    Arrays come out indexed [x, y, z] (SimpleITK's numpy view is [z, y, x]) with an RAS affine, so they
    go through the same MONAI transforms as NIfTI volumes from ``NibabelReader``.
    """

    def verify_suffix(self, filename) -> bool:
        return all(str(f).lower().endswith(SITK_SUFFIXES) or Path(f).is_dir() for f in ensure_tuple(filename))

    def read(self, data, **kwargs):
        images = [_sitk_read(f) for f in ensure_tuple(data)]
        self.filenames = [str(f) for f in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        arrays, meta = [], {}
        for image in img if isinstance(img, (list, tuple)) else [img]:  # a sitk.Image iterates over its pixels
            array = sitk.GetArrayFromImage(image)  # [z, y, x] or [z, y, x, components]
            spatial = image.GetDimension()
            array = np.moveaxis(array, range(spatial), range(spatial)[::-1])  # [x, y, z, (c)]
            affine = sitk_affine(image)
            meta = {
                MetaKeys.AFFINE: affine,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[:spatial]),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if array.ndim == spatial else -1,
                "pixdim": np.array([1.0, *image.GetSpacing()]),
            }
            arrays.append(array)
        if len(arrays) == 1:
            return arrays[0], meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays), meta


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and RAS affine of a volume without loading its voxels (raises on an unreadable file)."""
    if is_nifti(path):
        image = nib.load(str(path))
        return tuple(int(s) for s in image.shape), np.asarray(image.affine, dtype=float)
    if Path(path).is_dir():
        image = _sitk_read(path)
    else:
        image = sitk.ImageFileReader()
        image.SetFileName(str(path))
        image.ReadImageInformation()
    size = tuple(int(s) for s in image.GetSize())
    get_components = getattr(image, "GetNumberOfComponentsPerPixel", None) or image.GetNumberOfComponents
    components = get_components()
    shape = size + ((components,) if components > 1 else ())
    return shape, sitk_affine(image)


def check_case_files(case: dict) -> None:
    """Header-level checks of one case, without reading voxels: files exist and are readable, images are
    3-D (or one 4-D file with a channel per modality), all share one shape and affine, the label too.

    Raises:
        CaseError naming the case, the file and the problem.
    """
    case_id = case.get("case_id")
    images = case["image"] if isinstance(case["image"], (list, tuple)) else [case["image"]]
    reference = None
    for path in [*images, *([case["label"]] if case.get("label") else [])]:
        if not Path(path).exists():
            raise CaseError("file not found", case_id, path)
        if not os.access(path, os.R_OK):
            raise CaseError("file is not readable (permission denied)", case_id, path)
        try:
            shape, affine = read_header(path)
        except Exception as e:  # nibabel / SimpleITK raise many types for damaged files
            raise CaseError(f"cannot be read as a volume ({type(e).__name__}: {e})", case_id, path) from None
        is_4d_image = len(images) == 1 and path == images[0] and len(shape) == 4
        if len(shape) != 3 and not is_4d_image:
            raise CaseError(f"is {len(shape)}-D with shape {shape}; expected a 3-D volume", case_id, path)
        if reference is None:
            reference = (shape[:3], affine, path)
            continue
        if shape[:3] != reference[0]:
            raise CaseError(
                f"has shape {shape[:3]} but {Path(reference[2]).name} has {reference[0]}; "
                "modalities and label must be co-registered on one grid",
                case_id,
                path,
            )
        if not np.allclose(affine, reference[1], atol=AFFINE_ATOL):
            diff = float(np.abs(affine - reference[1]).max())
            raise CaseError(
                f"affine differs from {Path(reference[2]).name} by up to {diff:.4g} (tolerance {AFFINE_ATOL}); "
                "modalities and label must be co-registered on one grid",
                case_id,
                path,
            )


@contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``, else removed.

    The temporary name keeps the target's suffix so libraries that choose a format by suffix still do.
    """
    target = Path(target)
    suffix = "".join(target.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name.removesuffix(suffix)}.", suffix=f".partial{suffix}", dir=target.parent
        )
    except OSError as e:  # the temporary name would only confuse: name the file the user asked for
        raise MedsegError(f"cannot write {target} ({e.strerror or e})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get ordinary permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(target: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``target`` through :func:`atomic_path`; returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(target)


def write_like(array: np.ndarray, reference: str | os.PathLike, target: str | os.PathLike, dtype=np.uint8) -> Path:
    """Write ``array`` [x, y, z] (or [x, y, z, c]) with the geometry of the volume at ``reference``.

    A NIfTI reference lends its header (affine, qform/sform codes, units) so the result overlays the input
    in ITK-SNAP and 3D Slicer; other formats lend SimpleITK's origin, spacing and direction. The target
    is always written atomically; its format follows its suffix.
    """
    array = np.asarray(array).astype(dtype)
    if is_nifti(reference):
        ref = nib.load(str(reference))
        if tuple(array.shape[:3]) != tuple(ref.shape[:3]):
            raise ValueError(f"array shape {array.shape[:3]} does not match {reference} shape {ref.shape[:3]}")
        header = ref.header.copy()
        header.set_data_dtype(dtype)
        header["scl_slope"], header["scl_inter"] = 1, 0
        image = nib.Nifti1Image(array, ref.affine, header)
        image.set_qform(ref.get_qform(), int(ref.header["qform_code"]) or 1)
        image.set_sform(ref.get_sform(), int(ref.header["sform_code"]) or 1)
        with atomic_path(target) as tmp:
            nib.save(image, str(tmp))
        return Path(target)
    ref = _sitk_read(reference)
    spatial = np.moveaxis(array, range(3), range(3)[::-1])  # [z, y, x, (c)]
    image = sitk.GetImageFromArray(spatial, isVector=array.ndim == 4)
    image.SetOrigin(ref.GetOrigin()[:3])
    image.SetSpacing(ref.GetSpacing()[:3])
    image.SetDirection(np.array(ref.GetDirection()).reshape(ref.GetDimension(), -1)[:3, :3].ravel().tolist())
    with atomic_path(target) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return Path(target)


def case_output_name(case_id: str, suffix: str = ".nii.gz") -> str:
    """``<case>.nii.gz``; refuses ids that would escape the output folder."""
    if not case_id or Path(case_id).name != case_id or case_id in {".", ".."}:
        raise CaseError("case id is not a plain file name", case_id)
    return f"{case_id}{suffix}"


def reference_file(case: dict) -> str:
    """The input file whose geometry a prediction for ``case`` is written with (its first modality)."""
    image = case["image"]
    return str(image[0] if isinstance(image, Sequence) and not isinstance(image, str) else image)


# A temporary file older than this is what a killed run left behind; a younger one may be another run's write
# into the same folder, in progress (a label map takes seconds to write)
STALE_PARTIAL_S = 600


def check_output_target(out: str | os.PathLike) -> None:
    """Fail at once, before a model is loaded, where ``out`` cannot become a writable folder: a file in its
    place or above it, or no permission to write there. Creates nothing."""
    absolute = Path(out).absolute()
    existing = next(p for p in (absolute, *absolute.parents) if p.exists())
    if not existing.is_dir():
        raise MedsegError(f"output folder {out}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MedsegError(f"output folder {out} is not writable (no permission to write in {existing})")


def check_output_file(path: str | os.PathLike) -> None:
    """:func:`check_output_target` for an output file: its folder can be made and written, and ``path`` is
    not a folder. Creates nothing."""
    if Path(path).is_dir():
        raise MedsegError(f"{path} is a folder; give a file name")
    check_output_target(Path(path).parent)


def check_output_dir(out: Path, inputs: list[dict]) -> None:
    """Fail before any work when the output folder cannot be written, lacks the space for the label maps,
    or would overwrite an input; remove temporary files a killed earlier run left behind."""
    check_output_target(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".medseg-write-test."):
            pass
    except OSError as e:
        raise MedsegError(f"output folder {out} is not writable ({e.strerror or e})") from None
    for partial in out.glob(".*.partial.*"):  # atomic_path's temporary names: never a finished output
        try:
            if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:  # a younger one may be another run's write
                partial.unlink()
        except FileNotFoundError:  # another run renamed it onto its output meanwhile
            continue
    needed = sum(Path(reference_file(case)).stat().st_size for case in inputs if Path(reference_file(case)).is_file())
    free = shutil.disk_usage(out).free
    if free < needed:  # a uint8 label map is smaller than the (float) modality it is written like
        raise MedsegError(
            f"output folder {out} has {free / 2**20:.0f} MiB free; the label maps need up to {needed / 2**20:.0f} MiB"
        )
    inputs_resolved = {
        Path(p).resolve()
        for case in inputs
        for p in (case["image"] if isinstance(case["image"], list) else [case["image"]])
    }
    for case in inputs:
        target = (out / case_output_name(case["case_id"])).resolve()
        if target in inputs_resolved:
            raise MedsegError(f"output {target} would overwrite an input scan; choose another --out")
