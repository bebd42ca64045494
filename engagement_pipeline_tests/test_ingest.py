"""The ingest on real Zooniverse exports and on generated variants of every input case."""

import gzip
import hashlib
import re
from pathlib import Path

import dagster as dg
import pytest

from engagement_pipeline import ingest
from engagement_pipeline.ingest.files import ExportFormatError
from engagement_pipeline_tests.conftest import (
    CAT_EXPORT,
    MICHIGAN_EXPORT,
    copy_real_exports,
    csv_text,
    read_rows,
)
from engagement_pipeline_tests.project import project_resources


def run_ingest(warehouse, folder: Path) -> ingest.IngestReport:
    storage = project_resources()["storage"]
    salt = ingest.load_salt(storage.salt_file)
    with warehouse.connect() as con:
        return ingest.ingest_exports(con, ingest.find_exports(folder), salt, storage.root / "tmp")


def query(warehouse, sql: str, params=None):
    with warehouse.connect() as con:
        return con.execute(sql, params or []).fetchall()


def table_digest(warehouse, table: str) -> str:
    rows = query(warehouse, f"select * exclude (ingested_at) from {table} order by all")
    return hashlib.sha256(repr(rows).encode()).hexdigest()


# ----------------------------------------------------------------------------- real exports


def test_real_exports_load_every_row_with_exact_users(warehouse, exports_dir):
    copy_real_exports(exports_dir)
    report = run_ingest(warehouse, exports_dir)

    assert report.files_read == 2 and report.total("rows_rejected") == 0
    per_file = dict(query(warehouse, "select parse_filename(source_file), count(*) from classifications group by all"))
    assert per_file == {"cat-project-classifications.csv": 153, "michigan-sample.csv": 2000}
    # Counted independently with Python's csv module: 19 + 31 distinct user names,
    # of which 17 + 15 are not-logged-in (114 + 178 rows).
    users, anonymous_users, anonymous_rows = query(
        warehouse,
        "select count(distinct user_key), count(distinct user_key) filter (is_anonymous), "
        "count(*) filter (is_anonymous) from classifications",
    )[0]
    assert (users, anonymous_users, anonymous_rows) == (50, 32, 292)
    # Logged-in volunteers keep their user_id as key; others get a salted hash.
    assert query(warehouse, "select user_key from classifications where classification_id = 24269156") == [("1546699",)]
    hashed = query(warehouse, "select distinct user_key from classifications where is_anonymous")
    assert all(key.startswith("h:") and len(key) == 26 for (key,) in hashed)


def test_real_export_values_are_typed_in_utc(warehouse, exports_dir):
    copy_real_exports(exports_dir)
    run_ingest(warehouse, exports_dir)
    row = query(
        warehouse,
        """
        select created_at::varchar, started_at::varchar, finished_at::varchar, utc_offset_minutes,
               device_class, workflow_id, workflow_version, gold_standard, expert, subject_ids, source_line
        from classifications where classification_id = 24269156
        """,
    )[0]
    # metadata utc_offset "18000" (seconds, sign reversed) is UTC-5: -300 minutes.
    assert row == (
        "2017-01-06 20:36:55+00", "2017-01-06 20:36:21.468+00", "2017-01-06 20:36:54.398+00",
        -300, "mobile", 2276, "463.55", True, True, "4597474", 2,
    )  # fmt: skip
    # The cat project's volunteer is on desktop Firefox at UTC.
    assert query(
        warehouse, "select device_class, utc_offset_minutes from classifications where classification_id = 611591158"
    ) == [("desktop", 0)]


def test_rerun_changes_nothing_and_skips_known_files(warehouse, exports_dir):
    copy_real_exports(exports_dir)
    run_ingest(warehouse, exports_dir)
    before = table_digest(warehouse, "classifications")
    report = run_ingest(warehouse, exports_dir)
    assert report.files_skipped == 2 and report.files_read == 0
    assert table_digest(warehouse, "classifications") == before


@pytest.mark.parametrize("rows_per_part", [ingest.load.ROWS_PER_INSERT_PART, 7])
def test_snapshots_store_each_classification_once(warehouse, exports_dir, monkeypatch, rows_per_part):
    # 7 rows a part: the inserts run in hundreds of parts by a hash of the id, as a 38.5M-row export's do
    monkeypatch.setattr(ingest.load, "ROWS_PER_INSERT_PART", rows_per_part)
    header, rows = read_rows(MICHIGAN_EXPORT)
    (exports_dir / "2017-01-snapshot.csv").write_text(csv_text(header, rows[:1200]))
    run_ingest(warehouse, exports_dir)
    # The next month's full snapshot holds the old rows again plus new ones.
    (exports_dir / "2017-02-snapshot.csv").write_text(csv_text(header, rows))
    report = run_ingest(warehouse, exports_dir)

    assert [f.skipped for f in report.files] == [True, False]
    second = report.files[1]
    assert (second.rows_read, second.rows_inserted, second.rows_duplicate) == (2000, 800, 1200)
    assert query(warehouse, "select count(*), count(distinct classification_id) from classifications") == [(2000, 2000)]
    # The first file to store a classification keeps it.
    assert query(warehouse, "select count(*) from classifications where source_file like '%2017-01%'") == [(1200,)]
    # Within a file the first line wins: a third snapshot has 30 new ids, then the old rows, then 10 of the new
    # ids again with another time.
    new = [[str(9_000_000 + i), *row[1:]] for i, row in enumerate(rows[:30])]
    later = [[row[0], *row[1:7], "2017-02-01 00:00:00 UTC", *row[8:]] for row in new[:10]]
    (exports_dir / "2017-03-snapshot.csv").write_text(csv_text(header, new + rows + later))
    third = run_ingest(warehouse, exports_dir).files[2]
    assert (third.rows_inserted, third.rows_duplicate) == (30, 2000 + 10)
    assert query(warehouse, "select count(*), count(distinct classification_id) from classifications") == [(2030, 2030)]
    assert query(
        warehouse,
        "select count(*) from classifications where classification_id between 9000000 and 9000009 "
        "and created_at < timestamptz '2017-02-01 00:00:00+00'",
    ) == [(10,)]


def test_a_changed_file_is_read_again(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    target = exports_dir / "export.csv"
    target.write_text(csv_text(header, rows[:500]))
    run_ingest(warehouse, exports_dir)
    target.write_text(csv_text(header, rows[:700]))
    report = run_ingest(warehouse, exports_dir)
    assert report.files[0].rows_inserted == 200
    assert query(warehouse, "select count(*) from classifications") == [(700,)]


# ----------------------------------------------------------------------------- generated variants


def test_r_saved_na_values_are_missing(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    text = (MICHIGAN_EXPORT.read_text().splitlines()[0]) + "\n"
    text += '1001,"not-logged-in-abc123",NA,"aa",2276,"Initial Workflow",463.55,"2017-01-06 20:36:55 UTC",NA,NA,NA,"[]","{}",NA\n'
    text += (
        '1002,"volunteer",77,"bb",NA,"Initial Workflow",NA,"2017-01-06 20:40:00 UTC","false",NA,"{}","[]","{}",123\n'
    )
    (exports_dir / "r.csv").write_text(text)
    run_ingest(warehouse, exports_dir)
    got = query(
        warehouse,
        "select classification_id, is_anonymous, workflow_id, workflow_version, gold_standard, expert, "
        "subject_ids, device_class, started_at from classifications order by 1",
    )
    assert got == [
        (1001, True, 2276, "463.55", None, False, None, "unknown", None),
        (1002, False, None, None, False, False, "123", "unknown", None),
    ]
    assert query(warehouse, "select user_key from classifications where classification_id = 1002") == [("77",)]


def test_broken_metadata_json_keeps_the_row_without_its_fields(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    rows = [list(r) for r in rows[:3]]
    rows[1][header.index("metadata")] = '{"started_at": "2017-01-06T20:3'
    (exports_dir / "broken-metadata.csv").write_text(csv_text(header, rows))
    run_ingest(warehouse, exports_dir)
    got = query(
        warehouse,
        "select count(*), count(started_at), count(utc_offset_minutes), count(*) filter (device_class = 'unknown') "
        "from classifications",
    )
    assert got == [(3, 2, 2, 1)]


def test_non_utf8_bytes_and_quoted_newlines_load_with_true_line_numbers(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    rows = rows[:5]
    rows[1][header.index("annotations")] = '[{"task":"T0","value":"first line\nsecond line\nthird"}]'
    body = csv_text(header, rows).encode()
    # A Latin-1 byte inside the user agent of the fourth row.
    body = body.replace(b"Mozilla/5.0", b"Mozilla\xe9/5.0", 1)
    (exports_dir / "latin.csv").write_bytes(body)
    report = run_ingest(warehouse, exports_dir)

    assert report.files[0].transcoded and report.files[0].rows_rejected == 0
    ids = [int(r[0]) for r in rows]
    lines = dict(query(warehouse, "select classification_id, source_line from classifications"))
    # Row 2 spans three physical lines, so rows after it start two lines later.
    assert [lines[i] for i in ids] == [2, 3, 6, 7, 8]


def test_missing_optional_columns_extra_and_reordered_columns(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    keep = ["created_at", "user_name", "classification_id", "metadata"]
    minimal = [[r[header.index(c)] for c in keep] + ["surplus"] for r in rows[:50]]
    (exports_dir / "minimal.csv").write_text(csv_text([*keep, "my_extra_column"], minimal))
    run_ingest(warehouse, exports_dir)

    got = query(
        warehouse,
        "select count(*), count(distinct user_key), bool_and(user_key like 'h:%'), count(workflow_id), count(started_at) "
        "from classifications",
    )
    names = {r[header.index("user_name")] for r in rows[:50]}
    # No user_id column: every user, logged in or not, gets the salted hash of their name.
    assert got == [(50, len(names), True, 0, 50)]


def test_gzip_exports_in_subfolders(warehouse, exports_dir):
    nested = exports_dir / "2017" / "01"
    nested.mkdir(parents=True)
    with gzip.open(nested / "cat.csv.gz", "wb") as handle:
        handle.write(CAT_EXPORT.read_bytes())
    (exports_dir / "notes.txt").write_text("not an export, and not *.csv: ignored")
    report = run_ingest(warehouse, exports_dir)
    assert len(report.files) == 1
    assert query(warehouse, "select count(*) from classifications") == [(153,)]


def test_unusable_rows_are_rejected_with_line_and_reason_and_the_rest_loads(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    rows = [list(r) for r in rows[:6]]
    rows[1][header.index("classification_id")] = ""
    rows[2][header.index("created_at")] = "last tuesday"
    rows[3][header.index("created_at")] = "2999-01-01 00:00:00 UTC"
    rows[4][header.index("created_at")] = "2001-01-01 00:00:00 UTC"
    text = csv_text(header, rows) + "999,only,three\n"
    (exports_dir / "bad-rows.csv").write_text(text)
    run_ingest(warehouse, exports_dir)

    rejected = query(warehouse, "select line_number, reason, raw_text from rejected_rows order by line_number")
    assert [(line, reason.split(":")[0]) for line, reason, _ in rejected] == [
        (3, "missing or non-numeric classification_id"),
        (4, "unparseable created_at"),
        (5, "created_at in the future"),
        (6, "created_at before Zooniverse existed (2007-07)"),
        (8, "malformed CSV"),
    ]
    assert query(warehouse, "select count(*) from classifications") == [(2,)]
    for _, _, raw in rejected:
        assert rows[0][header.index("user_ip")] not in raw and "hmboone" not in raw


def test_not_an_export_fails_naming_file_and_changes_nothing(warehouse, exports_dir):
    copy_real_exports(exports_dir)
    run_ingest(warehouse, exports_dir)
    before = table_digest(warehouse, "classifications")

    header, rows = read_rows(MICHIGAN_EXPORT)
    (exports_dir / "a-new-valid-export.csv").write_text(csv_text(header, rows[:3]))
    (exports_dir / "subjects.csv").write_text("subject_id,project_id,metadata\n1,2,{}\n")
    with pytest.raises(
        ExportFormatError,
        match=r"subjects\.csv.*missing column\(s\) classification_id, created_at, user_id or user_name",
    ):
        run_ingest(warehouse, exports_dir)
    assert table_digest(warehouse, "classifications") == before
    assert query(warehouse, "select count(*) from ingested_files") == [(2,)]


def test_no_user_ip_or_user_name_anywhere_in_the_warehouse(warehouse, exports_dir):
    copy_real_exports(exports_dir)
    header, rows = read_rows(MICHIGAN_EXPORT)
    bad = [list(r) for r in rows[:3]]
    bad[0][header.index("created_at")] = "garbage"  # a rejected row keeps its raw text
    (exports_dir / "with-rejects.csv").write_text(csv_text(header, bad) + "1,2\n")
    run_ingest(warehouse, exports_dir)

    secrets = set()
    for path in (CAT_EXPORT, MICHIGAN_EXPORT):
        h, rs = read_rows(path)
        secrets |= {r[h.index("user_ip")] for r in rs} | {r[h.index("user_name")] for r in rs}
    secrets -= {"", "NA"}
    assert len(secrets) > 60

    with warehouse.connect() as con:
        tables = [t for (t,) in con.execute("select table_name from information_schema.tables").fetchall()]
        everything = " ".join(str(row) for table in tables for row in con.execute(f"select * from {table}").fetchall())
    assert not [s for s in secrets if s in everything]


def test_ingest_asset_and_checks_through_dagster(warehouse, exports_dir):
    from engagement_pipeline.ingest.assets import ingest_assets, ingest_checks

    copy_real_exports(exports_dir)
    result = dg.materialize([*ingest_assets, *ingest_checks], resources=project_resources(warehouse=warehouse))
    assert result.success
    by_key = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("ingest_classifications")
    }
    meta = by_key["classifications"]
    assert by_key["rejected_rows"]["dagster/row_count"].value == 0
    assert meta["dagster/row_count"].value == 2153 and meta["files_read"].value == 2
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)


def test_a_file_without_header_is_refused_without_echoing_its_first_row(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    (exports_dir / "no-header.csv").write_text(csv_text(rows[0], rows[1:5]))  # the first row stands as header
    with pytest.raises(ExportFormatError) as error:
        run_ingest(warehouse, exports_dir)
    message = str(error.value)
    assert "no-header.csv" in message and "missing column(s) classification_id" in message
    assert rows[0][header.index("user_ip")] not in message and rows[0][header.index("user_name")] not in message


def test_the_same_content_at_two_paths_in_one_run_is_loaded_once(warehouse, exports_dir):
    copy_real_exports(exports_dir)
    (exports_dir / "again").mkdir()
    copy_real_exports(exports_dir / "again")
    report = run_ingest(warehouse, exports_dir)
    assert report.files_read == 2 and report.files_skipped == 2
    assert query(warehouse, "select count(*), sum(rows_inserted) from ingested_files") == [(2, 2153)]


def test_the_salt_is_made_once_and_a_damaged_one_is_refused(engagement_home):
    salt_file = engagement_home / "user_name_salt"
    first = ingest.load_salt(salt_file)
    assert len(first) == 64 and ingest.load_salt(salt_file) == first
    assert salt_file.stat().st_mode & 0o777 == 0o600
    salt_file.write_text("")
    with pytest.raises(ValueError, match="not a salt written by this project"):
        ingest.load_salt(salt_file)


def test_a_big_file_says_how_far_each_pass_is_while_it_loads(warehouse, exports_dir, monkeypatch):
    # Lines every 10 ms instead of 30 s, so a 60k-row gzip (about a second per pass) prints several per pass.
    from engagement_pipeline.sample import write_export

    monkeypatch.setattr(ingest.load, "PROGRESS_EVERY_S", 0.01)
    monkeypatch.setattr(ingest.load, "ROWS_PER_INSERT_PART", 20_000)
    write_export(exports_dir / "big.csv.gz", n_classifications=60_000, seed=3)
    said = []

    class Log:
        info = staticmethod(said.append)

    storage = project_resources()["storage"]
    with warehouse.connect() as con:
        report = ingest.ingest_exports(
            con, ingest.find_exports(exports_dir), ingest.load_salt(storage.salt_file), storage.root / "tmp", Log()
        )
        assert con.execute("select current_setting('enable_progress_bar')").fetchone() == (False,)
    assert report.files[0].rows_inserted == 60_000
    steps = {}
    for line in said[:-1]:  # the last is the file's summary
        steps.setdefault(line.split(": ")[1], []).append(line)
    assert {"checking (digest, lines, encoding)", "finding its records", "parsing"} <= set(steps), said
    assert any(step.startswith("storing 60,000 rows") for step in steps), said
    for lines in steps.values():
        shares = [int(m.group(1)) for m in map(re.compile(r": (\d+)%, ").search, lines) if m]
        assert shares == sorted(shares) and all(0 <= share <= 100 for share in shares), lines
    # DuckDB's own progress of the parse and of the insert's statements (two a part, three parts here)
    assert any(re.search(r": (parsing|storing 60,000 rows): \d+%, ", line) for line in said), said
    checking = steps["checking (digest, lines, encoding)"]
    assert any(
        re.search(r"big\.csv\.gz: checking .*: \d+%, \d+ s so far, about \d+ s left$", line) for line in checking
    )
    assert said[-1].startswith("big.csv.gz: 60,000 rows read, 60,000 new")
