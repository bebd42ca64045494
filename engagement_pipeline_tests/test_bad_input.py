"""The ingest on a corpus of bad input: every case has its expected outcome.

Either a clear `ExportFormatError` naming the file and the problem (and
nothing of that run stored), or the file loads with its unusable rows in
`rejected_rows` (line and reason) and every valid row kept. Then a
property-based round trip: random valid rows written with Python's csv module
come back from the warehouse unchanged.

Complements test_ingest.py (real exports, R-saved NA, non-UTF-8 bytes, quoted
newlines, missing/extra columns, gzip, the basic reject reasons, a non-export
next to a valid file, privacy of the warehouse tables).
"""

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engagement_pipeline import ingest
from engagement_pipeline.ingest.files import ExportFormatError
from engagement_pipeline.resources import Warehouse
from engagement_pipeline_tests.conftest import (
    MICHIGAN_EXPORT,
    copy_real_exports,
    csv_text,
    read_rows,
)
from engagement_pipeline_tests.project import project_resources

HEADER, ROWS = read_rows(MICHIGAN_EXPORT)
COLUMN = {name: i for i, name in enumerate(HEADER)}
IDS = [int(r[COLUMN["classification_id"]]) for r in ROWS]


def run_ingest(warehouse: Warehouse, folder: Path) -> ingest.IngestReport:
    storage = project_resources()["storage"]
    salt = ingest.load_salt(storage.salt_file)
    with warehouse.connect() as con:
        return ingest.ingest_exports(con, ingest.find_exports(folder), salt, storage.root / "tmp")


def query(warehouse: Warehouse, sql: str, params=None) -> list[tuple]:
    with warehouse.connect() as con:
        ingest.ensure_schema(con)
        return con.execute(sql, params or []).fetchall()


def rows_with(changes: dict[int, dict[str, str]], n: int = 5) -> list[list[str]]:
    """The first `n` real rows, with {row index: {column: new value}} applied."""
    rows = [list(r) for r in ROWS[:n]]
    for index, values in changes.items():
        for column, value in values.items():
            rows[index][COLUMN[column]] = value
    return rows


def good_csv(n: int = 5) -> bytes:
    return csv_text(HEADER, ROWS[:n]).encode()


def zipped(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("classifications.csv", data)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- files that are not exports

NOT_EXPORTS = {
    "empty": (b"", r"empty"),
    "blank lines only": (b"\n\n  \n", r"empty"),
    "binary junk": (bytes(range(256)) * 64, r"binary content"),
    "JSON named .csv": (
        json.dumps([{"classification_id": 1, "created_at": "2017-01-06 20:36:55 UTC", "user_id": 5}]).encode(),
        r"missing column\(s\) classification_id, created_at, user_id or user_name",
    ),
    "zip renamed .csv": (zipped(good_csv()), r"binary content \(a zip"),
    "gzip named .csv": (
        gzip.compress(good_csv()),
        r"gzip-compressed, in a file named \.csv\): rename it to end in \.csv\.gz",
    ),
    "semicolon delimiter": (good_csv().replace(b",", b";"), r"is the delimiter not a comma"),
    "tab delimiter": (good_csv().replace(b",", b"\t"), r"is the delimiter not a comma"),
}


@pytest.mark.parametrize("case", NOT_EXPORTS, ids=list(NOT_EXPORTS))
def test_a_file_that_is_not_an_export_fails_naming_it_and_stores_nothing(warehouse, exports_dir, case):
    data, problem = NOT_EXPORTS[case]
    # A valid export sorts first: it must not be loaded either, since every header is checked up front.
    (exports_dir / "a-valid.csv").write_bytes(good_csv())
    (exports_dir / "b-bad.csv").write_bytes(data)

    with pytest.raises(ExportFormatError, match=rf"b-bad\.csv.*{problem}"):
        run_ingest(warehouse, exports_dir)
    assert query(warehouse, "select (select count(*) from classifications), (select count(*) from ingested_files)") == [
        (0, 0)
    ]

    # Fixed (removed) and run again: the valid file loads.
    (exports_dir / "b-bad.csv").unlink()
    run_ingest(warehouse, exports_dir)
    assert query(warehouse, "select count(*) from classifications") == [(5,)]


def test_a_truncated_gzip_fails_naming_it_and_loads_none_of_its_rows(warehouse, exports_dir):
    (exports_dir / "a-valid.csv").write_bytes(good_csv(3))
    whole = gzip.compress(csv_text(HEADER, ROWS[:400]).encode())
    (exports_dir / "b-cut.csv.gz").write_bytes(whole[: len(whole) * 2 // 3])

    with pytest.raises(ExportFormatError, match=r"b-cut\.csv\.gz: cannot be read to its end"):
        run_ingest(warehouse, exports_dir)
    # The earlier file was a whole transaction of its own; not one row of the broken one arrived.
    assert query(warehouse, "select parse_filename(source_file), count(*) from classifications group by all") == [
        ("a-valid.csv", 3)
    ]
    assert query(warehouse, "select count(*) from ingested_files where source_file like '%b-cut%'") == [(0,)]

    (exports_dir / "b-cut.csv.gz").write_bytes(whole)  # the complete download
    run_ingest(warehouse, exports_dir)
    assert query(warehouse, "select count(*) from classifications") == [(400,)]


# ----------------------------------------------------------------------------- files that load, rows rejected or not


def truncated_in_a_quoted_field() -> bytes:
    data = good_csv(5)
    return data[: data.rindex(b'"{') + 20]  # the last line ends inside its metadata JSON


def truncated_after_two_fields() -> bytes:
    return good_csv(4) + f"{IDS[4]},not-logged-in-1".encode()


def crlf_with_quoted_newline_and_a_reject() -> bytes:
    rows = rows_with({1: {"annotations": "first\r\nsecond\r\nthird"}, 3: {"created_at": "the day after"}})
    return csv_text(HEADER, rows, line_ending="\r\n").encode()


def with_byte_order_mark() -> bytes:
    return b"\xef\xbb\xbf" + good_csv(5)


def with_ten_megabyte_field() -> bytes:
    rows = rows_with({1: {"annotations": json.dumps([{"task": "T0", "value": "x" * (10 * 1024 * 1024)}])}})
    return csv_text(HEADER, rows).encode()


def with_forty_megabyte_row() -> bytes:
    rows = rows_with({1: {"annotations": json.dumps([{"task": "T0", "value": "x" * (40 * 1024 * 1024)}])}})
    return csv_text(HEADER, rows).encode()


def with_one_nul_byte() -> bytes:
    return csv_text(HEADER, rows_with({2: {"workflow_name": "Initial\x00Workflow"}})).encode()


def in_utf16() -> bytes:
    return good_csv(5).decode().encode("utf-16")


def with_blank_lines_at_the_end() -> bytes:
    return good_csv(5) + b"\n\n"


LOADS = {
    # name: (file bytes, ids loaded -> their line, rejected (line, reason prefix))
    "truncated last line inside a quoted field": (
        truncated_in_a_quoted_field,
        {IDS[0]: 2, IDS[1]: 3, IDS[2]: 4, IDS[3]: 5},
        [(6, "malformed CSV")],
    ),
    "truncated last line, no newline": (
        truncated_after_two_fields,
        {IDS[0]: 2, IDS[1]: 3, IDS[2]: 4, IDS[3]: 5},
        [(6, "malformed CSV")],
    ),
    "header only": (lambda: good_csv(0), {}, []),
    "header only, no final newline": (lambda: good_csv(0).rstrip(b"\n"), {}, []),
    "Windows line endings": (
        crlf_with_quoted_newline_and_a_reject,
        # row 2 spans three physical lines
        {IDS[0]: 2, IDS[1]: 3, IDS[2]: 6, IDS[4]: 8},
        [(7, "unparseable created_at")],
    ),
    "UTF-8 byte order mark": (with_byte_order_mark, {i: n + 2 for n, i in enumerate(IDS[:5])}, []),
    "a 10 MB field": (with_ten_megabyte_field, {IDS[0]: 2, IDS[1]: 3, IDS[2]: 4, IDS[3]: 5, IDS[4]: 6}, []),
    # issue 16, point 2: a row over the reader's 16 MB limit is rejected at its line, the next rows keep theirs
    "a 40 MB row": (with_forty_megabyte_row, {IDS[0]: 2, IDS[2]: 4, IDS[3]: 5, IDS[4]: 6}, [(3, "line too long")]),
    # issue 16, point 8: one NUL byte does not make a file binary; UTF-16 is read as such
    "one NUL byte": (with_one_nul_byte, {i: n + 2 for n, i in enumerate(IDS[:5])}, []),
    "UTF-16 with a byte order mark": (in_utf16, {i: n + 2 for n, i in enumerate(IDS[:5])}, []),
    "blank lines at the end": (with_blank_lines_at_the_end, {i: n + 2 for n, i in enumerate(IDS[:5])}, []),
}


@pytest.mark.parametrize("case", LOADS, ids=list(LOADS))
def test_a_damaged_file_loads_every_valid_row_and_rejects_the_rest_by_line(warehouse, exports_dir, case):
    build, loaded, rejected = LOADS[case]
    (exports_dir / "export.csv").write_bytes(build())
    report = run_ingest(warehouse, exports_dir)

    assert dict(query(warehouse, "select classification_id, source_line from classifications")) == loaded
    got = query(warehouse, "select line_number, reason from rejected_rows order by line_number")
    assert [(line, reason.split(":")[0]) for line, reason in got] == rejected
    # Every row read is accounted for, and the file is recorded as ingested (a rerun skips it).
    (result,) = report.files
    assert result.rows_read == result.rows_inserted + result.rows_rejected == len(loaded) + len(rejected)
    assert run_ingest(warehouse, exports_dir).files_skipped == 1


def test_the_ten_megabyte_field_arrives_whole(warehouse, exports_dir):
    """Not only the row: the value itself is read entirely (a rejected row keeps it in raw_text)."""
    big = "y" * (10 * 1024 * 1024)
    rows = rows_with({1: {"created_at": "not a time", "annotations": big}})
    (exports_dir / "big.csv").write_text(csv_text(HEADER, rows))
    run_ingest(warehouse, exports_dir)
    (raw,) = query(warehouse, "select raw_text from rejected_rows")[0]
    assert json.loads(raw)["annotations"] == big


CREATED_AT_FORMATS = {
    "2017-01-06 20:36:55 UTC": dt.datetime(2017, 1, 6, 20, 36, 55),  # the Panoptes format
    "2017-01-06T20:36:55Z": dt.datetime(2017, 1, 6, 20, 36, 55),  # ISO 8601
    "2017-01-06T20:36:55.250Z": dt.datetime(2017, 1, 6, 20, 36, 55, 250_000),
    "2017-01-06 22:36:55+02:00": dt.datetime(2017, 1, 6, 20, 36, 55),  # an offset: converted to UTC
    "2017-01-06T15:36:55-05:00": dt.datetime(2017, 1, 6, 20, 36, 55),
    "2017-01-06 20:36:55": dt.datetime(2017, 1, 6, 20, 36, 55),  # naive: taken as UTC
    " 2017-01-06 20:36:55 UTC ": dt.datetime(2017, 1, 6, 20, 36, 55),  # padded
}


def test_created_at_in_other_formats_and_offsets_is_stored_in_utc(warehouse, exports_dir):
    texts = list(CREATED_AT_FORMATS)
    rows = [list(ROWS[0]) for _ in texts]
    for i, (row, text) in enumerate(zip(rows, texts)):
        row[COLUMN["classification_id"]], row[COLUMN["created_at"]] = str(1000 + i), text
    (exports_dir / "formats.csv").write_text(csv_text(HEADER, rows))
    run_ingest(warehouse, exports_dir)

    stored = dict(query(warehouse, "select classification_id, created_at from classifications"))
    expected = {1000 + i: CREATED_AT_FORMATS[t].replace(tzinfo=dt.UTC) for i, t in enumerate(texts)}
    assert stored == expected
    assert query(warehouse, "select count(*) from rejected_rows") == [(0,)]


def _days_from_now(days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S UTC")


IMPLAUSIBLE_DATES = {
    "9999-12-31 23:59:59 UTC": "created_at in the future",
    "2100-01-01T00:00:00Z": "created_at in the future",
    "in three days": "created_at in the future",
    "1970-01-01 00:00:00 UTC": "created_at before Zooniverse existed",
    "2007-06-30 23:59:59 UTC": "created_at before Zooniverse existed",
    "0001-01-01 00:00:00 UTC": "created_at before Zooniverse existed",
    "2017-02-30 10:00:00 UTC": "unparseable created_at",  # no such day
    "2017-01-06 25:61:00 UTC": "unparseable created_at",
}


def test_dates_in_the_future_or_before_zooniverse_are_rejected(warehouse, exports_dir):
    texts = list(IMPLAUSIBLE_DATES)
    rows = [list(ROWS[0]) for _ in range(len(texts) + 2)]
    for i, row in enumerate(rows):
        row[COLUMN["classification_id"]] = str(1000 + i)
    for row, text in zip(rows, texts):
        row[COLUMN["created_at"]] = _days_from_now(3) if text == "in three days" else text
    rows[-2][COLUMN["created_at"]] = "2007-07-01 00:00:00 UTC"  # the first day kept
    rows[-1][COLUMN["created_at"]] = _days_from_now(0)  # now: a clock a little ahead is no reason
    (exports_dir / "dates.csv").write_text(csv_text(HEADER, rows))
    run_ingest(warehouse, exports_dir)

    got = query(warehouse, "select line_number, reason from rejected_rows order by line_number")
    assert [line for line, _ in got] == [i + 2 for i in range(len(texts))]
    assert [reason.startswith(IMPLAUSIBLE_DATES[t]) for (_, reason), t in zip(got, texts)] == [True] * len(texts)
    assert query(warehouse, "select classification_id from classifications order by 1") == [
        (1000 + len(texts),),
        (1001 + len(texts),),
    ]


BROKEN_METADATA = {
    "not JSON at all": "session=abc; started=yesterday",
    "a JSON array": '[{"started_at": "2017-01-06T20:36:21.468Z"}]',
    "wrong types": '{"started_at": 5, "finished_at": true, "utc_offset": "east", "user_agent": {"a": 1}}',
    "impossible times": '{"started_at": "2017-13-45T99:00:00Z", "finished_at": "soon"}',
    "truncated": '{"started_at": "2017-01-06T20:3',
}


@pytest.mark.parametrize("case", BROKEN_METADATA, ids=list(BROKEN_METADATA))
def test_broken_metadata_keeps_the_row_with_its_metadata_fields_missing(warehouse, exports_dir, case):
    rows = rows_with({1: {"metadata": BROKEN_METADATA[case]}}, n=3)
    (exports_dir / "metadata.csv").write_text(csv_text(HEADER, rows))
    run_ingest(warehouse, exports_dir)
    got = dict(
        (cid, rest)
        for cid, *rest in query(
            warehouse, "select classification_id, started_at, finished_at, utc_offset_minutes from classifications"
        )
    )
    assert set(got) == set(IDS[:3])
    assert got[IDS[1]] == [None, None, None]
    assert all(value is not None for i in (0, 2) for value in got[IDS[i]])


# ----------------------------------------------------------------------------- the same classification twice


def _variant(row: list[str], created_at: str, user_id: str, workflow_id: str) -> list[str]:
    row = list(row)
    row[COLUMN["created_at"]], row[COLUMN["user_id"]], row[COLUMN["workflow_id"]] = created_at, user_id, workflow_id
    return row


def test_the_same_classification_in_two_files_keeps_the_first_file_ingested(warehouse, exports_dir):
    """The rule: files are ingested in sorted path order, and a stored classification is never replaced."""
    first = _variant(ROWS[0], "2017-01-06 20:36:55 UTC", "111", "1")
    second = _variant(ROWS[0], "2017-01-07 08:00:00 UTC", "222", "2")
    # Written in the opposite order of their names: the names decide, not the clock.
    (exports_dir / "2017-02.csv").write_text(csv_text(HEADER, [second, ROWS[1]]))
    (exports_dir / "2017-01.csv").write_text(csv_text(HEADER, [first]))
    report = run_ingest(warehouse, exports_dir)

    assert [Path(f.path).name for f in report.files] == ["2017-01.csv", "2017-02.csv"]
    assert [(f.rows_inserted, f.rows_duplicate) for f in report.files] == [(1, 0), (1, 1)]
    got = query(
        warehouse,
        "select user_key, workflow_id, created_at::varchar, parse_filename(source_file) from classifications "
        "where classification_id = ?",
        [IDS[0]],
    )
    assert got == [("111", 1, "2017-01-06 20:36:55+00", "2017-01.csv")]

    # A later run with a file that sorts before both still does not replace what is stored.
    (exports_dir / "2016-12.csv").write_text(
        csv_text(HEADER, [_variant(ROWS[0], "2017-01-05 00:00:00 UTC", "333", "3")])
    )
    report = run_ingest(warehouse, exports_dir)
    assert [(Path(f.path).name, f.skipped, f.rows_duplicate) for f in report.files][0] == ("2016-12.csv", False, 1)
    assert query(warehouse, "select user_key from classifications where classification_id = ?", [IDS[0]]) == [("111",)]
    assert query(warehouse, "select count(*), count(distinct classification_id) from classifications") == [(2, 2)]


def test_the_same_classification_twice_in_one_file_keeps_the_first_line(warehouse, exports_dir):
    rows = [_variant(ROWS[0], "2017-01-06 20:36:55 UTC", "111", "1"), ROWS[1],
            _variant(ROWS[0], "2017-01-07 08:00:00 UTC", "222", "2")]  # fmt: skip
    (exports_dir / "export.csv").write_text(csv_text(HEADER, rows))
    (result,) = run_ingest(warehouse, exports_dir).files
    assert (result.rows_read, result.rows_inserted, result.rows_duplicate) == (3, 2, 1)
    assert query(
        warehouse, "select user_key, source_line from classifications where classification_id = ?", [IDS[0]]
    ) == [("111", 2)]


# ----------------------------------------------------------------------------- property: a round trip

SALT = "property-test-salt"
# Text as volunteers type it: any printable unicode, commas, quotes, newlines.
# No NUL (a NUL byte marks a binary file) and no surrounding whitespace (trimmed).
# No carriage return outside a CRLF pair: DuckDB's CSV reader (2.0.1) takes a lone
# \r inside a quoted field of a \n-terminated file for a line break, and rejects the
# row as malformed or refuses the file (a known limitation, tested below).
free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30).filter(
    lambda s: "\r" not in s.replace("\r\n", "")
)
user_names = free_text.filter(lambda s: s.strip() == s and s not in ("", "NA") and s.strip(" ") == s)


@st.composite
def export_rows(draw) -> tuple[list[dict], str]:
    n = draw(st.integers(1, 12))
    ids = draw(st.lists(st.integers(1, 2**62), min_size=n, max_size=n, unique=True))
    people = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just(""), st.builds(lambda h: f"not-logged-in-{h:08x}", st.integers(0, 2**32))),
                st.tuples(st.integers(1, 10**9).map(str), user_names),
                st.tuples(st.just(""), user_names),  # a user_name without user_id: hashed too
            ),
            min_size=1,
            max_size=4,
        )
    )
    rows = []
    for classification_id in ids:
        user_id, user_name = draw(st.sampled_from(people))
        created = draw(st.datetimes(dt.datetime(2008, 1, 1), dt.datetime(2024, 12, 31))).replace(microsecond=0)
        rows.append(
            {
                "classification_id": str(classification_id),
                "user_name": user_name,
                "user_id": user_id,
                "user_ip": draw(st.from_regex(r"[0-9a-f]{20}", fullmatch=True)),
                "workflow_id": str(draw(st.integers(1, 10**6))),
                "workflow_name": draw(free_text),
                "created_at": created.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "metadata": json.dumps({"session": draw(free_text)}),
                "annotations": json.dumps([{"task": "T0", "value": draw(free_text)}]),
                "subject_ids": str(draw(st.integers(1, 10**9))),
            }
        )
    return rows, draw(st.sampled_from(["\n", "\r\n"]))


def _write_with_csv_module(path: Path, rows: list[dict], line_ending: str) -> dict[str, int]:
    """Write the rows; return the physical line (1 = header) each classification starts on."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator=line_ending)
    writer.writeheader()
    lines = {}
    for row in rows:
        lines[row["classification_id"]] = buffer.getvalue().count("\n") + 1
        writer.writerow(row)
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return lines


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(export_rows())
def test_random_valid_rows_survive_a_round_trip(case):
    rows, line_ending = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "exports").mkdir()
        lines = _write_with_csv_module(root / "exports" / "export.csv", rows, line_ending)
        warehouse = Warehouse(database=str(root / "w.duckdb"), memory_limit="256MB", threads=1)
        with warehouse.connect() as con:
            report = ingest.ingest_exports(con, ingest.find_exports(root / "exports"), SALT, root / "tmp")
            stored = con.execute(
                "select classification_id::varchar, created_at, user_key, is_anonymous, workflow_id::varchar, "
                "subject_ids, source_line from classifications"
            ).fetchall()
            rejected = con.execute("select line_number, reason from rejected_rows").fetchall()

    assert rejected == [] and report.total("rows_inserted") == len(rows)
    by_id = {r[0]: r for r in stored}
    assert set(by_id) == {row["classification_id"] for row in rows}
    identity_of_key: dict[str, tuple] = {}
    for row in rows:
        _, created_at, user_key, is_anonymous, workflow_id, subject_ids, source_line = by_id[row["classification_id"]]
        expected_time = dt.datetime.strptime(row["created_at"], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=dt.UTC)
        assert created_at == expected_time
        assert (workflow_id, subject_ids, source_line) == (
            row["workflow_id"],
            row["subject_ids"],
            lines[row["classification_id"]],
        )
        if row["user_id"]:
            assert user_key == row["user_id"] and not is_anonymous
        else:
            # the salted one-way hash, computed here independently of the SQL
            assert user_key == "h:" + hashlib.sha256((SALT + row["user_name"]).encode()).hexdigest()[:24]
            assert is_anonymous == row["user_name"].startswith("not-logged-in")
        # One key per volunteer, one volunteer per key: same name -> same hash, different -> different.
        identity = (row["user_id"], row["user_name"] if not row["user_id"] else "")
        assert identity_of_key.setdefault(user_key, identity) == identity
    assert len(identity_of_key) == len({(r["user_id"], "" if r["user_id"] else r["user_name"]) for r in rows})


def test_a_lone_carriage_return_loads_inside_quotes_and_is_rejected_at_its_line_outside(warehouse, exports_dir):
    """DuckDB's CSV reader (2.0.1) gives up on a whole file at a carriage return outside quotes ("state
    machine reached an invalid state"): the scan before it leaves that row out, rejected at its line."""
    rows = rows_with({1: {"workflow_name": "QUOTED"}, 3: {"workflow_version": "UNQUOTED"}})
    text = csv_text(HEADER, rows).replace("QUOTED", '"before\rafter"', 1).replace("UNQUOTED", "46\r3")
    (exports_dir / "lone-cr.csv").write_text(text, newline="")
    run_ingest(warehouse, exports_dir)
    stored = dict(query(warehouse, "select classification_id, source_line from classifications"))
    assert stored == {IDS[0]: 2, IDS[1]: 3, IDS[2]: 4, IDS[4]: 6}
    got = query(warehouse, "select line_number, reason from rejected_rows where source_file like '%lone-cr%'")
    assert got == [(5, "malformed CSV: a carriage return inside an unquoted field")]


# ----------------------------------------------------------------------------- faults found by attack (issue 16)


def test_a_single_200_megabyte_line_stops_the_ingest_instead_of_loading_nothing(warehouse, exports_dir):
    """Point 2: a 200 MB one-row file was "ingested with 0 rows"; now its row is rejected, so the file fails."""
    (exports_dir / "a-valid.csv").write_bytes(good_csv(3))
    row = list(ROWS[0])
    row[COLUMN["annotations"]] = "z" * (200 * 1024 * 1024)
    (exports_dir / "b-huge.csv").write_text(csv_text(HEADER, [row]))
    with pytest.raises(
        ExportFormatError, match=r"b-huge\.csv: 1 of its 1 rows cannot be used.*line too long \(1 rows\)"
    ):
        run_ingest(warehouse, exports_dir)
    assert query(warehouse, "select parse_filename(source_file), count(*) from classifications group by all") == [
        ("a-valid.csv", 3)
    ]
    assert query(warehouse, "select count(*) from ingested_files where source_file like '%b-huge%'") == [(0,)]
    assert query(warehouse, "select count(*) from rejected_rows") == [(0,)]


def test_a_column_shifted_row_leaks_no_user_ip_or_user_name(warehouse, exports_dir):
    """Point 3: one field missing and an empty one appended: the field count matches, the values shift."""
    rows = [list(r) for r in ROWS[:6]]
    name, ip = rows[1][COLUMN["user_name"]], rows[1][COLUMN["user_ip"]]
    rows[1] = rows[1][1:] + [""]  # classification_id missing: user_name stands in its column, user_ip in user_id's
    loner = list(ROWS[7])
    loner[COLUMN["user_name"]], loner[COLUMN["user_ip"]] = "tidal.quail519", "10.20.30.40"
    rows.append(loner[: COLUMN["user_id"]] + loner[COLUMN["user_id"] + 1 :] + [""])  # user_id missing
    rows.append(loner[: COLUMN["workflow_id"]] + loner[COLUMN["workflow_id"] + 1 :] + ["x"])  # workflow_id missing
    (exports_dir / "shifted.csv").write_text(csv_text(HEADER, rows))
    run_ingest(warehouse, exports_dir)

    assert [line for (line,) in query(warehouse, "select line_number from rejected_rows order by 1")] == [3, 8, 9]
    everything = " ".join(str(r) for r in query(warehouse, "select * from rejected_rows"))
    assert name not in everything and ip not in everything
    assert "tidal.quail519" not in everything and "10.20.30.40" not in everything
    assert query(warehouse, "select count(*) from classifications") == [(5,)]


def test_latin1_names_that_differ_in_one_byte_stay_two_volunteers(warehouse, exports_dir):
    """Point 5: José and Josà (Müller and Möller) became one key when bytes were replaced by U+FFFD."""
    names = ["José", "Josà", "Müller", "Möller", "plain"]
    rows = [[str(100 + i), name, "2017-01-06 20:36:55 UTC"] for i, name in enumerate(names)]
    (exports_dir / "latin1.csv").write_bytes(
        csv_text(["classification_id", "user_name", "created_at"], rows).encode("latin-1")
    )
    run_ingest(warehouse, exports_dir)
    keys = dict(query(warehouse, "select classification_id, user_key from classifications"))
    assert len(set(keys.values())) == 5
    # A UTF-8 file's keys do not change: the same names in UTF-8 give the same keys.
    salt = ingest.load_salt(project_resources()["storage"].salt_file)
    expected = {100 + i: "h:" + hashlib.sha256((salt + n).encode()).hexdigest()[:24] for i, n in enumerate(names)}
    assert keys == expected


def test_a_file_whose_rows_are_almost_all_unusable_stops_the_ingest(warehouse, exports_dir):
    """Point 6: 1,000 rows with dates in another format passed with exit 0; now the file stops the ingest."""
    copy_real_exports(exports_dir)
    run_ingest(warehouse, exports_dir)
    rows = []
    for i in range(1000):
        row = list(ROWS[i % len(ROWS)])
        row[COLUMN["classification_id"]] = str(10**9 + i)
        row[COLUMN["created_at"]] = "06.01.2017 20:36"
        rows.append(row)
    (exports_dir / "other-dates.csv").write_text(csv_text(HEADER, rows))
    with pytest.raises(ExportFormatError) as error:
        run_ingest(warehouse, exports_dir)
    message = str(error.value)
    assert "other-dates.csv: 1,000 of its 1,000 rows cannot be used" in message
    assert "unparseable created_at (1000 rows)" in message and "Fix or remove the file" in message
    assert query(warehouse, "select count(*) from classifications") == [(2153,)]
    assert query(warehouse, "select count(*) from rejected_rows") == [(0,)]
    assert query(warehouse, "select count(*) from ingested_files where source_file like '%other-dates%'") == [(0,)]


def test_the_raw_text_of_a_malformed_row_is_the_line_at_its_number(warehouse, exports_dir):
    """Point 7: raw_text is read from the file at line_number (after quoted newlines and a too-long line)."""
    rows = rows_with({1: {"annotations": "one\ntwo\nthree"}, 3: {"annotations": "q" * (17 * 1024 * 1024)}}, n=8)

    def malformed_line(classification_id: int) -> str:  # 14 fields, a quote then text: DuckDB's UNQUOTED VALUE
        return f'{classification_id},,77,,2276,"Initial"Workflow,463.55,2017-01-06 20:36:55 UTC,,,,,,1\n'

    text = csv_text(HEADER, rows[:5]) + malformed_line(IDS[5] + 1)
    text += csv_text(HEADER, rows[5:]).split("\n", 1)[1] + malformed_line(IDS[6] + 1)
    (exports_dir / "malformed.csv").write_text(text)
    run_ingest(warehouse, exports_dir)
    lines = text.split("\n")
    got = query(warehouse, "select line_number, reason, raw_text from rejected_rows order by line_number")
    malformed = [(line, raw) for line, reason, raw in got if reason.startswith("malformed CSV")]
    assert [line for line, _ in malformed] == [9, 13]
    for line, raw in malformed:
        assert raw == lines[line - 1]
    stored = dict(query(warehouse, "select classification_id, source_line from classifications"))
    assert stored == {IDS[0]: 2, IDS[1]: 3, IDS[2]: 6, IDS[4]: 8, IDS[5]: 10, IDS[6]: 11, IDS[7]: 12}


def test_ids_that_are_not_plain_decimal_integers_are_rejected(warehouse, exports_dir):
    """Point 8: 0x10, 1e9 and 640_000_024 were read as numbers; a Panoptes id is a plain decimal integer."""
    texts = ["0x10", "1e9", "640_000_024", "+12", "-5", "12.0", "3000000000000000000000"]
    rows = [list(ROWS[0]) for _ in range(len(texts) + 20)]
    for i, row in enumerate(rows):
        row[COLUMN["classification_id"]] = texts[i] if i < len(texts) else str(5000 + i)
    (exports_dir / "ids.csv").write_text(csv_text(HEADER, rows))
    run_ingest(warehouse, exports_dir)
    got = query(warehouse, "select line_number, reason from rejected_rows order by 1")
    assert [line for line, _ in got] == [i + 2 for i in range(len(texts))]
    assert all(reason.startswith("missing or non-numeric classification_id") for _, reason in got)
    assert query(warehouse, "select min(classification_id), count(*) from classifications") == [(5000 + len(texts), 20)]


def test_a_file_name_that_is_not_utf8_loads_and_blocks_nothing(warehouse, exports_dir):
    """Point 8: a non-UTF-8 name was reported as a CSV problem and stopped the files after it."""
    import os

    strange = Path(os.fsdecode(bytes(exports_dir) + b"/caf\xe9-export.csv"))
    strange.write_bytes(good_csv(3))
    header, rows = read_rows(MICHIGAN_EXPORT)
    (exports_dir / "z-after.csv").write_text(csv_text(header, rows[10:14]))
    report = run_ingest(warehouse, exports_dir)
    assert [f.rows_inserted for f in report.files] == [3, 4]
    # Stored with the undecodable byte as \\xe9, so the path can be printed and searched for.
    names = {Path(name).name for (name,) in query(warehouse, "select distinct source_file from classifications")}
    assert names == {"caf\\xe9-export.csv", "z-after.csv"}
    assert run_ingest(warehouse, exports_dir).files_skipped == 2


def test_an_io_error_names_the_file(warehouse, exports_dir):
    """Point 8: an I/O error gave an OSError without the file name. /proc/self/mem reads fail with EIO."""
    (exports_dir / "a-valid.csv").write_bytes(good_csv(3))
    (exports_dir / "b-unreadable.csv").symlink_to("/proc/self/mem")
    with pytest.raises(ExportFormatError, match=r"b-unreadable\.csv: cannot be read \(.*\); check the disk"):
        run_ingest(warehouse, exports_dir)
    assert query(warehouse, "select count(*) from classifications") == [(0,)]
