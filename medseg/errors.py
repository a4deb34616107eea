"""Errors that speak the user's language: which case, which file, what is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike


class MedsegError(Exception):
    """Base class of the errors medseg reports to the user as one line, without a traceback."""


class CaseError(MedsegError, ValueError):
    """Something is wrong with one case of a dataset: names the case, the file and the problem.

    >>> str(CaseError("holds NaN voxels", case_id="BraTS2021_00001", path="a/t1.nii.gz"))
    'case BraTS2021_00001: a/t1.nii.gz: holds NaN voxels'
    """

    def __init__(self, problem: str, case_id: str | None = None, path: str | PathLike | None = None) -> None:
        self.problem, self.case_id, self.path = problem, case_id, path
        parts = [f"case {case_id}" if case_id else None, str(path) if path else None, problem]
        super().__init__(": ".join(p for p in parts if p))


class LayoutError(MedsegError, ValueError):
    """A dataset folder or datalist does not follow any layout medseg reads, or a forced one."""


def find_medseg_error(exc: BaseException) -> MedsegError | None:
    """The first MedsegError in an exception's cause/context chain (MONAI wraps transform errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MedsegError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def unwrapped_medseg_errors() -> Iterator[None]:
    """Raise a MedsegError that a library wrapped in its own error (MONAI wraps a transform's) as itself, so a
    Python caller gets medseg's error naming the case and file; other errors pass through unchanged."""
    try:
        yield
    except Exception as e:
        error = find_medseg_error(e)
        if error is None or error is e:
            raise
        raise error from None


class ConfigError(MedsegError, ValueError):
    """Settings that do not fit together (a network whose channels do not fit the dataset's task, ...)."""
