"""Old export files are recognised by size, mtime and a quick fingerprint, without being read again."""

import os
import shutil

from engagement_pipeline import ingest
from engagement_pipeline.ingest import load
from engagement_pipeline.ingest.known_files import EDGE_BYTES, quick_fingerprint
from engagement_pipeline.sample import write_export
from engagement_pipeline_tests.project import project_resources


def test_a_night_reads_only_the_new_snapshot_and_a_changed_file_is_read_again(warehouse, tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    folder.mkdir()
    write_export(folder / "day1.csv", 3_000, seed=1)
    read = []
    full_scan = load.scan_file
    monkeypatch.setattr(
        load, "scan_file", lambda path, limit, **kw: read.append(path.name) or full_scan(path, limit, **kw)
    )

    storage = project_resources()["storage"]
    salt = ingest.load_salt(storage.salt_file)

    def night() -> tuple[list[str], int]:
        read.clear()
        with warehouse.connect() as con:
            report = ingest.ingest_exports(con, ingest.find_exports(folder), salt, storage.root / "tmp")
            (rows,) = con.execute("select count(*) from classifications").fetchone()
        return sorted(read), report.total("rows_inserted"), rows

    assert night()[0] == ["day1.csv"]
    write_export(folder / "day2.csv", 4_000, seed=2)
    assert night()[0] == ["day2.csv"]  # day1 recognised without a read
    stored = night()
    assert stored[:2] == ([], 0)  # nothing read, nothing new

    os.utime(folder / "day1.csv", ns=(1, 1))  # touched (restored from a backup): read and hashed again, not reloaded
    assert night() == (["day1.csv"], 0, stored[2])
    assert night()[0] == []  # and recognised again afterwards

    # one more row at the end of day1: its size and last bytes change, so it is read and the row loaded
    with open(folder / "day1.csv", "a") as handle:
        lines = (folder / "day2.csv").read_text().splitlines()
        handle.write(lines[-1] + "\n")
    assert night()[0] == ["day1.csv"]

    # the same content at a new path (a copied folder) is read once, then recognised there too
    shutil.copy2(folder / "day2.csv", folder / "copy.csv")
    assert night()[0] == ["copy.csv"]
    assert night()[0] == []


def test_the_quick_fingerprint_sees_the_first_and_last_bytes_and_the_size(tmp_path):
    path = tmp_path / "f.csv"
    body = bytearray(b"x" * (3 * EDGE_BYTES))
    path.write_bytes(body)
    size, _, first = quick_fingerprint(path)
    for offset in (0, len(body) - 1):
        changed = bytearray(body)
        changed[offset] = ord("y")
        path.write_bytes(changed)
        assert quick_fingerprint(path)[2] != first
    path.write_bytes(body + b"x")
    assert quick_fingerprint(path)[0] == size + 1
