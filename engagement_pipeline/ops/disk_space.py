"""Free disk space under the state folders: checked before a run starts, named when a write runs out of it.

A full disk shows up as a different error in each store: sqlite (the Dagster
instance under DAGSTER_HOME, the MLflow store) says "database or disk is
full" or only "disk I/O error", DuckDB "Could not write file ...: No space
left on device", pyarrow and Python an `OSError` with errno ENOSPC. The
`engagement` command turns each into one message that names the folder, the
free space left on its disk, and what to do; and it refuses to start a run at
all when a state folder's disk has less than `MIN_FREE_MB` free.

Nothing stored is damaged by a full disk: DuckDB rolls the failed
transaction back, sqlite its journal, and every file the pipeline replaces is
written beside its place and renamed only once whole (ops/atomic_files.py).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Below this much free space on the disk of ENGAGEMENT_HOME or DAGSTER_HOME, `engagement run`, `demo` and
# `score` refuse to start (`--min-free-mb` changes it). A scoring run writes a few MB; the tests' 9.6 MB of
# export CSVs make a 4.9 MB warehouse (SQL models included): give a big ingest room to match.
MIN_FREE_MB = 100

# Texts that mean "the disk is full", whichever library wrote them.
DISK_FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded", "[errno 28]")
# sqlite's answer when a write fails half-way, a full disk among other causes: full only if a disk is low.
AMBIGUOUS_TEXTS = ("disk i/o error",)
WHAT_TO_DO = (
    "Free space on that disk, or point ENGAGEMENT_HOME (and DAGSTER_HOME, which defaults to "
    "$ENGAGEMENT_HOME/dagster) at a folder on a disk with room; then run the command again."
)


def readable_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a folder not created yet lives on its parent's disk)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class StateDisk:
    """One disk holding state folders: their names (`DAGSTER_HOME=/x`) and its free bytes."""

    folders: tuple[str, ...]
    free: int

    def describe(self) -> str:
        names = " and ".join(self.folders)
        return f"{names}: {readable_size(self.free)} free on {'its' if len(self.folders) == 1 else 'their'} disk"


def state_disks(folders: dict[str, Path]) -> list[StateDisk]:
    """The disks under `folders` (label -> path), least free space first; folders on one disk share an entry."""
    by_device: dict[int, tuple[list[str], int]] = {}
    for label, path in folders.items():
        existing = _existing(path)
        device = os.stat(existing).st_dev
        names, _ = by_device.setdefault(device, ([], shutil.disk_usage(existing).free))
        names.append(f"{label}={path}")
    disks = [StateDisk(tuple(names), free) for names, free in by_device.values()]
    return sorted(disks, key=lambda disk: disk.free)


def require_free_space(folders: dict[str, Path], min_free_mb: float) -> None:
    """SystemExit naming each state folder whose disk has less than `min_free_mb` free; nothing is written."""
    low = [disk for disk in state_disks(folders) if disk.free < min_free_mb * 2**20]
    if low:
        raise SystemExit(
            "Not enough free disk space to start a run: "
            + "; ".join(disk.describe() for disk in low)
            + f", and a run needs at least {min_free_mb:,g} MB (--min-free-mb). {WHAT_TO_DO} Nothing was changed."
        )


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and everything that caused it (each once)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or its cause) says the disk is full: errno ENOSPC/EDQUOT, or a library's words for it."""
    return any(
        (isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT))
        or any(marker in str(cause).lower() for marker in DISK_FULL_TEXTS)
        for cause in _chain(error)
    )


def says_disk_full(text: str, folders: dict[str, Path], min_free_mb: float) -> bool:
    """Whether an error message (a failed Dagster step's) means a full disk; "disk I/O error" only if one is low."""
    text = text.lower()
    if any(marker in text for marker in DISK_FULL_TEXTS):
        return True
    return any(marker in text for marker in AMBIGUOUS_TEXTS) and any(
        disk.free < min_free_mb * 2**20 for disk in state_disks(folders)
    )


def disk_full_message(folders: dict[str, Path], cause: str, min_free_mb: float) -> str:
    """The one message for a write that ran out of space: the folders whose disk is low, and what to do."""
    disks = state_disks(folders)
    # the low ones (whatever --min-free-mb let through), else the fullest: the failed write may have freed its space
    low = [disk for disk in disks if disk.free < max(min_free_mb, MIN_FREE_MB) * 2**20] or disks[:1]
    first_line = (cause.strip().splitlines() or [""])[0]  # sqlalchemy appends the whole SQL statement
    return (
        "The disk is full: "
        + "; ".join(disk.describe() for disk in low)
        + f".\n{WHAT_TO_DO}\nWhat was stored before is unchanged (the warehouse, the MLflow store and the "
        f"previous predictions are replaced whole or not at all).\nThe failed write: {first_line}"
    )


class DiskFullError(OSError):
    """A file could not be written for lack of space; the message names it, its folder's free space and the fix."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @classmethod
    def for_write(cls, target: Path, what: str, error: BaseException) -> DiskFullError:
        free = shutil.disk_usage(_existing(target.parent)).free
        return cls(
            f"No space left on device to write the {what} {target}: {readable_size(free)} free on the disk of "
            f"{target.parent}; the previous file is unchanged ({error}). {WHAT_TO_DO}"
        )

    @classmethod
    def for_warehouse(cls, database: Path, error: BaseException) -> DiskFullError:
        free = shutil.disk_usage(_existing(database.parent)).free
        return cls(
            f"No space left on device to write the warehouse {database}: {readable_size(free)} free on the disk of "
            f"{database.parent}; the failed transaction was rolled back, what was stored is unchanged "
            f"({str(error).splitlines()[0]}). {WHAT_TO_DO}"
        )
