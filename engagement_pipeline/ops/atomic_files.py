"""Files replaced atomically, and the temporaries a killed writer leaves behind.

`replacing(target)` hands out a hidden temporary beside `target`
(`.<name>.<random>.tmp`), which the caller fills; then it is fsynced and
renamed over `target`, so a reader sees the old file or the new one, never
half of one, and a failed write leaves the old file as it was.

A writer killed with SIGKILL runs no cleanup, so its temporary stays. Each
writer therefore holds an exclusive `flock` on its temporary for as long as it
writes; the kernel drops that lock when the process dies. Before writing, the
next writer removes every temporary of the same name that no process holds
(`remove_leftovers`), and never one a live writer holds: two writers of one
file can run at once (a scoring run writes its day's file after it released
the warehouse lock, and `engagement score` and the nightly schedule are two
processes). A temporary created after this process started is left alone too:
it may be a writer's that has created it but not yet locked it.

No reader takes a temporary for the file: the names start with a dot and end
in `.tmp` (no `*.parquet` glob matches them, and pyarrow's dataset discovery
skips names starting with a dot).
"""

from __future__ import annotations

import fcntl
import glob
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engagement_pipeline.ops.disk_space import DiskFullError, is_disk_full

STARTED_AT = time.time()  # this process's writers started no later than this (the module is imported first)


def temporary_for(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")


def remove_leftovers(folders: Iterable[Path], name: str) -> list[Path]:
    """Remove the temporaries of `name` in `folders` whose writer is gone; returns what was removed."""
    removed = []
    for folder in folders:
        for leftover in Path(folder).glob(f".{glob.escape(name)}.*.tmp"):
            try:
                handle = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:  # gone already (its writer renamed it), or a link: not ours
                continue
            try:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer's
                if os.fstat(handle).st_mtime >= STARTED_AT:
                    continue  # created since we started: perhaps by a writer about to lock it
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
            finally:
                os.close(handle)
    return removed


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def replacing(target: Path, what: str = "file") -> Iterator[Path]:
    """Yield a locked temporary path beside `target`; when the block ends, make it `target` atomically.

    The caller writes the temporary by its path, in place (pyarrow does; DuckDB's COPY needs
    `use_tmp_file false`). On any error the temporary is removed and `target` is untouched;
    a full disk raises `DiskFullError` naming `target`'s folder and its free space.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_for(target)
    handle = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # held until the rename: see remove_leftovers
        yield temporary
        if os.stat(temporary).st_ino != os.fstat(handle).st_ino:
            raise RuntimeError(f"{temporary} was replaced while being written, not written in place")
        _fsync(temporary)
        os.replace(temporary, target)
        _fsync(target.parent)  # the rename itself survives a crash
    except Exception as error:  # an OSError (pyarrow, the rename) or a DuckDB IOException (COPY)
        if is_disk_full(error):
            raise DiskFullError.for_write(target, what, error) from None  # the message carries the error
        raise
    finally:
        os.close(handle)
        temporary.unlink(missing_ok=True)
