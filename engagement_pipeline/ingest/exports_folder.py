"""One home, one exports folder: a second folder is refused, never mixed in silently.

A model trained on the bundled sample plus a project's own export (or on two
projects' exports) describes neither, and its scores land on the wrong days.
So the warehouse records the folder its first ingest read, and an ingest from
any other folder stops before it writes anything, with a message that names
the folders, what is stored, a few of the new files, and the fix: a home of
its own for each exports folder (ENGAGEMENT_HOME). Moving a project's folder
is the same refusal; the message says how to carry on with the stored data.
"""

from __future__ import annotations

from pathlib import Path

from engagement_pipeline.ingest.load import run_sql


class MixedExportsError(RuntimeError):
    """An ingest from another exports folder than the one this warehouse was built from."""


def check_exports_folder(con, folder: Path, files: list[Path], home: Path) -> None:
    """Record `folder` on the first ingest; raise MixedExportsError when the warehouse holds another folder's rows."""
    recorded, stored = run_sql(con, "exports_folder").fetchone()
    if recorded is not None and Path(recorded) == folder:
        return
    if recorded is None or stored == 0:  # a first ingest, or nothing of the old folder's kept: follow this one
        run_sql(con, "record_exports_folder", folder=str(folder))
        return
    shown = ", ".join(path.name for path in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    raise MixedExportsError(
        f"{folder} is not the exports folder of this home: {home} holds {stored:,} classifications from "
        f"{recorded}, and ingesting {shown} would mix two sets of volunteers into one model. Nothing was "
        f"ingested. Give each exports folder a home of its own, e.g.\n"
        f"    ENGAGEMENT_HOME={folder.parent / ('.engagement-' + folder.name)} engagement run --exports {folder}\n"
        f"(or, if {folder} is the same project moved, put the files back under {recorded}, "
        f"or start this home afresh by removing {home})."
    )
