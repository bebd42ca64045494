"""Every real export shape loads whole (issue 11).

Each case is a small slice generated here from the real Michigan export (an R
re-save, `NA` for missing values): anonymised hex-digest ids, one row per
mark, float user ids, no user_id column, no metadata or metadata without
timing, other encodings. The rule: one row per classification_id in
`classifications`, and no row rejected that carries an id, a time and a user.
"""

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from engagement_pipeline import ingest
from engagement_pipeline_tests.conftest import MICHIGAN_EXPORT, csv_text, read_rows
from engagement_pipeline_tests.project import project_resources

HEADER, ROWS = read_rows(MICHIGAN_EXPORT)
COLUMN = {name: i for i, name in enumerate(HEADER)}


def run_ingest(warehouse, folder: Path) -> ingest.IngestReport:
    storage = project_resources()["storage"]
    salt = ingest.load_salt(storage.salt_file)
    with warehouse.connect() as con:
        return ingest.ingest_exports(con, ingest.find_exports(folder), salt, storage.root / "tmp")


def query(warehouse, sql: str, params=None) -> list[tuple]:
    with warehouse.connect() as con:
        return con.execute(sql, params or []).fetchall()


def digest(text: str, length: int = 32) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def slice_of(n: int, columns: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    columns = columns or HEADER
    return columns, [[row[COLUMN[c]] for c in columns] for row in ROWS[:n]]


def assert_loaded_whole(warehouse, report, ids: set[int]) -> None:
    assert query(warehouse, "select count(*) from rejected_rows") == [(0,)]
    assert report.total("rows_rejected") == 0
    stored = {cid for (cid,) in query(warehouse, "select classification_id from classifications")}
    assert stored == ids


def test_anonymised_export_with_one_row_per_mark_loads_every_classification(warehouse, exports_dir):
    """Hex digests for user_id and user_name (shared exports), and each classification on 1-3 rows."""
    rows = []
    for i, row in enumerate(ROWS[:300]):
        row = list(row)
        if row[COLUMN["user_id"]] != "NA":
            row[COLUMN["user_id"]] = digest("id" + row[COLUMN["user_id"]])
        row[COLUMN["user_name"]] = digest("name" + row[COLUMN["user_name"]], 40)
        for mark in range(1 + i % 3):  # one row per marked point: same id, other annotations
            marked = list(row)
            marked[COLUMN["annotations"]] = json.dumps([{"task": "T1", "value": [{"x": mark, "y": 2 * mark}]}])
            rows.append(marked)
    (exports_dir / "anonymised.csv").write_text(csv_text(HEADER, rows))
    report = run_ingest(warehouse, exports_dir)

    ids = {int(r[COLUMN["classification_id"]]) for r in rows}
    assert_loaded_whole(warehouse, report, ids)
    assert report.total("rows_read") == len(rows) and report.total("rows_duplicate") == len(rows) - len(ids)
    # The opaque user_id is the key as it is; rows without one get the salted hash of the (digest) name.
    expected = {int(r[COLUMN["classification_id"]]): r[COLUMN["user_id"]] for r in rows}
    stored = dict(query(warehouse, "select classification_id, user_key from classifications"))
    for cid, user_id in expected.items():
        assert stored[cid] == user_id if user_id != "NA" else stored[cid].startswith("h:")
    # The first line of each classification is the one stored.
    first_line = query(warehouse, "select min(source_line), max(source_line) from classifications")[0]
    assert first_line[0] == 2


def test_user_id_as_integer_float_or_missing(warehouse, exports_dir):
    rows = [list(r) for r in ROWS[:6]]
    shapes = ["1546699", "1546699.0", " 1546699.00 ", "NA", "", "007"]
    for row, user_id in zip(rows, shapes):
        row[COLUMN["user_id"]] = user_id
    rows[4][COLUMN["user_name"]] = rows[3][COLUMN["user_name"]] = "a-volunteer"
    (exports_dir / "ids.csv").write_text(csv_text(HEADER, rows))
    report = run_ingest(warehouse, exports_dir)
    assert_loaded_whole(warehouse, report, {int(r[0]) for r in rows})
    keys = [k for (k,) in query(warehouse, "select user_key from classifications order by source_line")]
    assert keys[:3] == ["1546699"] * 3 and keys[5] == "7"
    assert keys[3].startswith("h:") and keys[3] == keys[4]  # the same user_name, no user_id: one hashed key


def test_no_user_id_column(warehouse, exports_dir):
    columns = [c for c in HEADER if c != "user_id"]
    header, rows = slice_of(40, columns)
    (exports_dir / "no-user-id.csv").write_text(csv_text(header, rows))
    report = run_ingest(warehouse, exports_dir)
    assert_loaded_whole(warehouse, report, {int(r[0]) for r in rows})
    assert query(warehouse, "select bool_and(user_key like 'h:%') from classifications") == [(True,)]


@pytest.mark.parametrize("shape", ["no metadata column", "metadata without timing keys", "metadata NA"])
def test_no_metadata_or_no_timing_in_it(warehouse, exports_dir, shape):
    if shape == "no metadata column":
        header, rows = slice_of(30, [c for c in HEADER if c != "metadata"])
    else:
        header, rows = slice_of(30)
        value = '{"source":"api","viewport":{"width":1,"height":2}}' if "keys" in shape else "NA"
        for row in rows:
            row[COLUMN["metadata"]] = value
    (exports_dir / "no-timing.csv").write_text(csv_text(header, rows))
    report = run_ingest(warehouse, exports_dir)
    assert_loaded_whole(warehouse, report, {int(r[0]) for r in rows})
    assert query(
        warehouse,
        "select count(started_at), count(finished_at), count(utc_offset_minutes), min(device_class) "
        "from classifications",
    ) == [(0, 0, 0, "unknown")]


def _name_only(n: int) -> tuple[list[str], list[list[str]]]:
    return slice_of(n, ["classification_id", "user_name", "created_at", "workflow_id", "workflow_name"])


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_other_encodings_load_with_the_keys_of_the_utf8_file(warehouse, exports_dir, encoding):
    """The same export in another encoding gives the same rows and the same user keys as in UTF-8."""
    header, rows = _name_only(20)
    rows[3][1], rows[4][1], rows[5][1] = "José", "Josà", "Müller"
    rows[6][4] = "Caméra trap (été)"
    (exports_dir / "a-utf8.csv").write_text(csv_text(header, rows), encoding="utf-8")
    run_ingest(warehouse, exports_dir)
    utf8 = dict(query(warehouse, "select classification_id, user_key from classifications"))

    shifted = [[str(int(r[0]) + 10**9), *r[1:]] for r in rows]
    (exports_dir / "b-other.csv").write_bytes(csv_text(header, shifted).encode(encoding))
    report = run_ingest(warehouse, exports_dir)
    assert report.files[1].rows_inserted == len(rows) and report.total("rows_rejected") == 0
    other = dict(query(warehouse, "select classification_id - 1000000000, user_key from classifications "
                                  "where classification_id > 1000000000"))  # fmt: skip
    assert other == utf8
    assert len({utf8[int(r[0])] for r in rows[3:6]}) == 3  # José, Josà, Müller: three volunteers


def test_r_resave_gzipped_loads_whole(warehouse, exports_dir):
    """The real R re-save (every string quoted, NA, numbers bare), gzip-compressed."""
    with gzip.open(exports_dir / "michigan.csv.gz", "wb") as handle:
        handle.write(MICHIGAN_EXPORT.read_bytes())
    report = run_ingest(warehouse, exports_dir)
    assert_loaded_whole(warehouse, report, {int(r[0]) for r in ROWS})


def test_rows_with_an_id_a_time_and_a_user_are_never_rejected(warehouse, exports_dir):
    """Every other column broken or odd at once: the row still loads."""
    rows = [list(r) for r in ROWS[:8]]
    odd = {
        "workflow_id": "not a number", "workflow_version": "v2-beta", "gold_standard": "maybe",
        "expert": "NA", "metadata": "{broken", "annotations": "", "subject_data": "NA", "subject_ids": "1;2;3",
    }  # fmt: skip
    for row in rows:
        for column, value in odd.items():
            row[COLUMN[column]] = value
    rows[1][COLUMN["user_id"]] = "a1b2c3d4e5f60718293a4b5c"  # opaque
    rows[2][COLUMN["user_name"]], rows[2][COLUMN["user_id"]] = "NA", "55"
    (exports_dir / "odd.csv").write_text(csv_text(HEADER, rows))
    report = run_ingest(warehouse, exports_dir)
    assert_loaded_whole(warehouse, report, {int(r[0]) for r in rows})
