"""The bundled sample export: Panoptes format, determinism, and volunteer dynamics."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from engagement_pipeline import sample as se
from engagement_pipeline_tests.conftest import CAT_EXPORT

HEADER = (
    "classification_id,user_name,user_id,user_ip,workflow_id,workflow_name,workflow_version,"
    "created_at,gold_standard,expert,metadata,annotations,subject_data,subject_ids"
)
ROWS = 20_000
SEED = 11


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return se.write_export(tmp_path_factory.mktemp("export") / "export.csv", ROWS, SEED)


@pytest.fixture(scope="module")
def con(export):
    """A DuckDB connection with the export as `c` (all text) and derived tables."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE c AS SELECT * FROM read_csv(?, all_varchar = true, header = true)", [str(export)])
    con.execute(
        """
        CREATE TABLE e AS
        SELECT classification_id::BIGINT AS cid,
               coalesce(user_id, user_name) AS u,
               user_id IS NULL AS anon,
               epoch(strptime(created_at, '%Y-%m-%d %H:%M:%S UTC')::TIMESTAMP) AS ts,
               epoch(strptime(metadata ->> 'finished_at', '%Y-%m-%dT%H:%M:%S.%gZ'))
                 - epoch(strptime(metadata ->> 'started_at', '%Y-%m-%dT%H:%M:%S.%gZ')) AS dur,
               (metadata ->> 'utc_offset')::INTEGER AS utc_offset
        FROM c
        """
    )
    # work sessions: a user's classifications with gaps under 30 minutes
    con.execute(
        """
        CREATE TABLE sessions AS
        WITH g AS (SELECT *, ts - lag(ts) OVER (PARTITION BY u ORDER BY ts, cid) AS gap FROM e),
             s AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap >= 1800 THEN 1 ELSE 0 END)
                                 OVER (PARTITION BY u ORDER BY ts, cid) AS sess FROM g)
        SELECT u, sess, any_value(anon) AS anon, any_value(utc_offset) AS utc_offset,
               count(*) AS n, min(ts) AS t0, max(ts) AS t1
        FROM s GROUP BY u, sess
        """
    )
    yield con
    con.close()


# ---------------------------------------------------------------------------
# Format
# ---------------------------------------------------------------------------


def test_header_matches_a_real_export(export):
    header = export.read_text().split("\n", 1)[0]
    assert header == HEADER
    assert tuple(header.split(",")) == se.EXPORT_COLUMNS
    with open(CAT_EXPORT, newline="") as f:
        assert header == f.readline().rstrip("\r\n")


def test_rows_parse_as_csv_with_fourteen_fields(export):
    with open(export, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == ROWS + 1
    assert {len(r) for r in rows} == {14}


def test_quoting_only_where_needed_matches_duckdb_copy(export, tmp_path):
    """Our hand-assembled lines are byte for byte what a CSV writer that quotes only
    when needed (DuckDB's COPY) makes of the same strings."""
    table = se.generate_export_table(ROWS, SEED)
    c = duckdb.connect()
    c.register("t", table)
    out = tmp_path / "copy.csv"
    c.execute(f"COPY t TO '{out}' (FORMAT csv, HEADER true)")
    assert out.read_bytes() == export.read_bytes()
    first = export.read_text().split("\n")[1]
    assert re.match(r'^\d+,[^",]+,\d*,[0-9a-f]{20},\d+,[^",]+,[\d.]+,\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC,,,"\{', first)


def test_table_is_what_the_csv_holds(export):
    table = se.generate_export_table(ROWS, SEED)
    assert table.column_names == list(se.EXPORT_COLUMNS)
    assert all(f.type == pa.string() for f in table.schema)
    read = pacsv.read_csv(
        export,
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in se.EXPORT_COLUMNS}, strings_can_be_null=True
        ),
    )
    assert read.equals(table)


@pytest.mark.parametrize("n", [1, 17, 4_321])
def test_exact_row_count_sorted_unique(n):
    table = se.generate_export_table(n, seed=3)
    assert table.num_rows == n
    ids = [int(x) for x in table.column("classification_id").to_pylist()]
    assert len(set(ids)) == n
    created = table.column("created_at").to_pylist()
    assert created == sorted(created)
    assert ids == sorted(ids)


def test_same_seed_same_bytes_other_seed_differs(export, tmp_path):
    again = se.write_export(tmp_path / "again.csv", ROWS, SEED)
    other = se.write_export(tmp_path / "other.csv", ROWS, SEED + 1)
    assert again.read_bytes() == export.read_bytes()
    assert other.read_bytes() != export.read_bytes()
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"


def test_fields(con):
    assert (
        con.execute(
            "SELECT count(*) FROM c WHERE NOT regexp_full_match(created_at, "
            "'\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC')"
        ).fetchone()[0]
        == 0
    )
    lo, hi = con.execute("SELECT min(created_at), max(created_at) FROM c").fetchone()
    assert lo >= "2025-06-01" and hi < "2025-09-16"
    n_workflows = con.execute("SELECT count(DISTINCT (workflow_id, workflow_name)) FROM c").fetchone()[0]
    assert n_workflows >= 3
    assert (
        con.execute("SELECT count(*) FROM c WHERE NOT regexp_full_match(workflow_version, '\\d+\\.\\d+')").fetchone()[0]
        == 0
    )
    assert con.execute("SELECT count(*) FROM c WHERE NOT regexp_full_match(user_ip, '[0-9a-f]{20}')").fetchone()[0] == 0
    gold = con.execute("SELECT avg((gold_standard IS NOT NULL)::INT), avg((expert IS NOT NULL)::INT) FROM c").fetchone()
    assert gold[0] < 0.05 and gold[1] < 0.05
    assert con.execute("SELECT count(*) FROM c WHERE gold_standard NOT IN ('true')").fetchone()[0] == 0
    # created_at is finished_at plus a little
    lag = con.execute(
        "SELECT min(ts - floor(epoch(strptime(metadata ->> 'finished_at', '%Y-%m-%dT%H:%M:%S.%gZ')))), "
        "max(ts - epoch(strptime(metadata ->> 'finished_at', '%Y-%m-%dT%H:%M:%S.%gZ'))) "
        "FROM e JOIN c ON e.cid = c.classification_id::BIGINT"
    ).fetchone()
    assert lag[0] >= 0 and lag[1] < 30
    # JSON columns are JSON
    assert (
        con.execute(
            "SELECT count(*) FROM c WHERE NOT json_valid(annotations) OR NOT json_valid(subject_data)"
        ).fetchone()[0]
        == 0
    )
    assert (
        con.execute("SELECT count(*) FROM c WHERE json_keys(subject_data::JSON)[1] <> subject_ids").fetchone()[0] == 0
    )


def test_metadata_json(export):
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    with open(export, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows[:: len(rows) // 500]:
        meta = json.loads(row["metadata"])
        for key in (
            "started_at",
            "finished_at",
            "utc_offset",
            "user_agent",
            "session",
            "viewport",
            "source",
            "user_language",
            "live_project",
        ):
            assert key in meta
        assert iso.match(meta["started_at"]) and iso.match(meta["finished_at"])
        assert meta["started_at"] < meta["finished_at"]
        assert isinstance(meta["utc_offset"], str) and int(meta["utc_offset"]) % 900 == 0
        assert meta["user_agent"].startswith("Mozilla/5.0 (")
        assert re.fullmatch(r"[0-9a-f]{64}", meta["session"])
        json.loads(row["annotations"])
    agents = {json.loads(r["metadata"])["user_agent"] for r in rows}
    assert any("iPhone" in a or "Mobile" in a for a in agents)
    assert any("iPad" in a for a in agents)
    assert any("Windows NT" in a for a in agents)


def test_utc_offset_sign_is_javascripts(con):
    """utc_offset is getTimezoneOffset()*60: local = UTC - utc_offset. With that sign the
    sessions' local start hours peak in the evening; with the opposite sign they would not."""
    offsets = {r[0] for r in con.execute("SELECT DISTINCT utc_offset FROM e").fetchall()}
    assert 14400 in offsets or 18000 in offsets  # the Americas: UTC-4 / UTC-5 are positive
    assert -3600 in offsets or -7200 in offsets  # Europe: negative
    right, wrong = con.execute(
        """
        SELECT avg((hour(to_timestamp(t0 - utc_offset)) BETWEEN 18 AND 22)::INT),
               avg((hour(to_timestamp(t0 + utc_offset)) BETWEEN 18 AND 22)::INT)
        FROM sessions
        """
    ).fetchone()
    assert right > 0.3 and right > wrong + 0.07, (right, wrong)


def test_not_logged_in_volunteers(con):
    bad = con.execute(
        """
        SELECT count(*) FROM c
        WHERE (user_name LIKE 'not-logged-in-%') <> (user_id IS NULL)
           OR (user_id IS NULL AND user_name <> 'not-logged-in-' || user_ip)
           OR (user_id IS NOT NULL AND NOT regexp_full_match(user_id, '[1-9]\\d*'))
        """
    ).fetchone()[0]
    assert bad == 0
    share, ids_per_name = con.execute(
        "SELECT avg((user_id IS NULL)::INT), max(ids) FROM "
        "(SELECT user_name, any_value(user_id) AS user_id, count(DISTINCT user_id) AS ids FROM c GROUP BY user_name)"
    ).fetchone()
    assert 0.12 <= share <= 0.28
    assert ids_per_name <= 1
    anon_single, named_single = con.execute(
        "SELECT avg(CASE WHEN anon THEN (ns = 1)::INT END), avg(CASE WHEN NOT anon THEN (ns = 1)::INT END) "
        "FROM (SELECT u, any_value(anon) AS anon, count(*) AS ns FROM sessions GROUP BY u)"
    ).fetchone()
    assert anon_single > 0.8 and anon_single > named_single


# ---------------------------------------------------------------------------
# Dynamics
# ---------------------------------------------------------------------------


def test_most_come_once_few_come_back_for_long(con):
    single, multi_day, long_span = con.execute(
        """
        SELECT avg((ns = 1)::INT), avg((days > 1)::INT), avg((span_days >= 14)::INT)
        FROM (SELECT u, count(*) AS ns, count(DISTINCT floor(t0 / 86400)) AS days,
                     (max(t1) - min(t0)) / 86400 AS span_days
              FROM sessions GROUP BY u)
        """
    ).fetchone()
    assert single > 0.6
    assert 0.05 < multi_day < 0.4
    assert long_span > 0.01


def test_session_lengths_are_heavy_tailed(con):
    median, p99, longest = con.execute("SELECT median(n), quantile_cont(n, 0.99), max(n) FROM sessions").fetchone()
    assert longest >= 10 * median
    assert p99 >= 6 * median
    # habits persist: a volunteer's session lengths correlate across sessions
    corr = con.execute(
        """
        SELECT corr(ln(n), ln(prev_n)) FROM
        (SELECT n, lag(n) OVER (PARTITION BY u ORDER BY sess) AS prev_n FROM sessions)
        WHERE prev_n IS NOT NULL
        """
    ).fetchone()[0]
    assert corr > 0.2


def test_returns_cluster_near_a_day_later(con):
    day, half, day_and_a_half = con.execute(
        """
        WITH gaps AS (SELECT (t0 - lag(t1) OVER (PARTITION BY u ORDER BY sess)) / 3600 AS h FROM sessions)
        SELECT count(*) FILTER (WHERE h BETWEEN 20 AND 28),
               count(*) FILTER (WHERE h BETWEEN 8 AND 16),
               count(*) FILTER (WHERE h BETWEEN 32 AND 40)
        FROM gaps
        """
    ).fetchone()
    assert day > 1.5 * half and day > 1.5 * day_and_a_half, (day, half, day_and_a_half)


def test_breaks_inside_sessions(con):
    short, long_ = con.execute(
        """
        WITH g AS (SELECT ts - lag(ts) OVER (PARTITION BY u ORDER BY ts, cid) - dur AS pause FROM e)
        SELECT avg((pause BETWEEN 30 AND 300)::INT), avg((pause BETWEEN 300 AND 900)::INT) FROM g
        WHERE pause < 1800
        """
    ).fetchone()
    assert 0.01 < short < 0.2
    assert 0.001 < long_ < short


def test_volunteers_slow_down_at_the_end_of_long_sessions(con):
    end, before = con.execute(
        """
        WITH g AS (SELECT *, ts - lag(ts) OVER (PARTITION BY u ORDER BY ts, cid) AS gap FROM e),
             s AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap >= 1800 THEN 1 ELSE 0 END)
                                 OVER (PARTITION BY u ORDER BY ts, cid) AS sess FROM g),
             r AS (SELECT *, row_number() OVER (PARTITION BY u, sess ORDER BY ts DESC, cid DESC) AS from_end,
                             count(*) OVER (PARTITION BY u, sess) AS n FROM s)
        SELECT avg(ln(dur)) FILTER (WHERE from_end <= 3),
               avg(ln(dur)) FILTER (WHERE from_end > 3 AND from_end <= n - 5)
        FROM r WHERE n >= 20 AND dur > 0
        """
    ).fetchone()
    # about 20% or more slower, on average, in the last three
    assert end - before > 0.18, (end, before)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def test_gzip_output(export, tmp_path):
    gz = se.write_export(tmp_path / "export.csv.gz", ROWS, SEED)
    with gzip.open(gz, "rb") as f:
        assert f.read() == export.read_bytes()
    again = se.write_export(tmp_path / "again.csv.gz", ROWS, SEED)
    assert again.read_bytes() == gz.read_bytes()
    with duckdb.connect() as con:
        n = con.execute("SELECT count(*) FROM read_csv(?, all_varchar = true)", [str(gz)]).fetchone()[0]
    assert n == ROWS


def test_ensure_sample_exports_writes_once(tmp_path):
    folder = tmp_path / "sample_exports"
    assert se.ensure_sample_exports(folder) == folder
    sample = folder / se.SAMPLE_FILE_NAME
    assert sample.is_file()
    before = (sample.stat().st_mtime_ns, sample.read_bytes())
    n_lines = before[1].count(b"\n")
    assert n_lines == se.DEFAULT_CLASSIFICATIONS + 1
    assert se.ensure_sample_exports(folder) == folder
    assert (sample.stat().st_mtime_ns, sample.read_bytes()) == before
    assert sorted(p.name for p in folder.iterdir()) == [se.SAMPLE_FILE_NAME]


def test_ensure_sample_exports_leaves_a_folder_with_exports_alone(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.csv.gz").write_bytes(b"")
    se.ensure_sample_exports(tmp_path)
    assert not (tmp_path / se.SAMPLE_FILE_NAME).exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "deep" / "cli.csv"
    assert se.main(["--rows", "2500", "--seed", "5", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "2,500 classifications" in line and "MB" in line and "\n" not in line
    assert out.read_bytes().count(b"\n") == 2501
    assert out.read_bytes() == se.write_export(tmp_path / "same.csv", 2500, 5).read_bytes()
