"""The generator's shapes of volunteer behaviour: each writes an export the ingest loads, the same
bytes for the same seed, and the dynamics its docstring promises (which differ from the default)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from engagement_pipeline import sample
from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline_tests.project import project_resources

VARIANTS = ("traits", "habits")
ROWS = 20_000


def sessions_of(export: Path) -> duckdb.DuckDBPyConnection:
    """A connection with the export's rows as `e` and work sessions (gaps under 30 minutes) as `sessions`."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        """
        CREATE TABLE e AS
        SELECT classification_id::BIGINT AS cid,
               coalesce(user_id, user_name) AS u,
               workflow_id AS wf,
               epoch(strptime(created_at, '%Y-%m-%d %H:%M:%S UTC')::TIMESTAMP) AS ts,
               epoch(strptime(metadata ->> 'finished_at', '%Y-%m-%dT%H:%M:%S.%gZ'))
                 - epoch(strptime(metadata ->> 'started_at', '%Y-%m-%dT%H:%M:%S.%gZ')) AS dur
        FROM read_csv(?, all_varchar = true, header = true)
        """,
        [str(export)],
    )
    con.execute(
        """
        CREATE TABLE sessions AS
        WITH g AS (SELECT *, ts - lag(ts) OVER (PARTITION BY u ORDER BY ts, cid) AS gap FROM e),
             s AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap >= 1800 THEN 1 ELSE 0 END)
                                 OVER (PARTITION BY u ORDER BY ts, cid) AS sess FROM g)
        SELECT u, sess, any_value(wf) AS wf, count(*) AS n, min(ts) AS t0, max(ts) AS t1
        FROM s GROUP BY u, sess
        """
    )
    return con


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    """shape name -> connection over a 20k-row export of that shape (seed 11)."""
    folder = tmp_path_factory.mktemp("shapes")
    cons = {name: sessions_of(sample.write_export(folder / f"{name}.csv", ROWS, 11, name)) for name in sample.SHAPES}
    yield cons
    for con in cons.values():
        con.close()


# ---------------------------------------------------------------------------
# Every shape is an export
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", VARIANTS)
def test_each_shape_writes_an_export_the_ingest_loads(shape, exports_dir, warehouse):
    sample.write_export(exports_dir / f"{shape}.csv", 3_000, 5, shape)
    assert dg.materialize(ingest_assets, resources=project_resources(warehouse=warehouse)).success
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        stored, users, rejected = con.execute(
            "select (select count(*) from classifications), (select count(distinct user_key) from classifications),"
            " (select count(*) from rejected_rows)"
        ).fetchone()
    assert (stored, rejected) == (3_000, 0)
    assert users > 10


@pytest.mark.parametrize("shape", VARIANTS)
def test_each_shape_is_deterministic_per_seed(shape, tmp_path):
    one = sample.write_export(tmp_path / "one.csv", 4_000, 3, shape).read_bytes()
    again = sample.write_export(tmp_path / "again.csv", 4_000, 3, shape).read_bytes()
    other = sample.write_export(tmp_path / "other.csv", 4_000, 4, shape).read_bytes()
    default = sample.write_export(tmp_path / "default.csv", 4_000, 3).read_bytes()
    assert one == again
    assert one != other and one != default
    assert one.count(b"\n") == 4_001


def test_the_default_shape_is_the_bundled_sample(tmp_path):
    named = sample.write_export(tmp_path / "named.csv", 2_000, 9, "default").read_bytes()
    assert named == sample.write_export(tmp_path / "plain.csv", 2_000, 9).read_bytes()


def test_an_unknown_shape_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown sample shape 'weekly': choose one of default, traits, habits"):
        sample.write_export(tmp_path / "out" / "x.csv", 100, 1, "weekly")
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_shape(tmp_path, capsys):
    out = tmp_path / "habits.csv"
    assert sample.main(["--rows", "1500", "--seed", "2", "--shape", "habits", "--out", str(out)]) == 0
    assert "shape habits" in capsys.readouterr().out
    assert out.read_bytes() == sample.write_export(tmp_path / "same.csv", 1500, 2, "habits").read_bytes()


# ---------------------------------------------------------------------------
# Dynamics that differ from the default
# ---------------------------------------------------------------------------


def gaps_near_a_day_and_half_a_day(con) -> tuple[int, int]:
    return con.execute(
        """
        WITH gaps AS (SELECT (t0 - lag(t1) OVER (PARTITION BY u ORDER BY sess)) / 3600 AS h FROM sessions)
        SELECT count(*) FILTER (WHERE h BETWEEN 20 AND 28), count(*) FILTER (WHERE h BETWEEN 8 AND 16) FROM gaps
        """
    ).fetchone()


def end_of_session_slowdown(con) -> float:
    """Mean over sessions of 20+ tasks of (mean log duration of the last 3) - (of the middle ones),
    within each session, so that sessions of fast and slow workflows weigh alike."""
    return con.execute(
        """
        WITH g AS (SELECT *, ts - lag(ts) OVER (PARTITION BY u ORDER BY ts, cid) AS gap FROM e),
             s AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap >= 1800 THEN 1 ELSE 0 END)
                                 OVER (PARTITION BY u ORDER BY ts, cid) AS sess FROM g),
             r AS (SELECT *, row_number() OVER (PARTITION BY u, sess ORDER BY ts DESC, cid DESC) AS from_end,
                             count(*) OVER (PARTITION BY u, sess) AS n FROM s)
        SELECT avg(end_ - before_) FROM (
            SELECT avg(ln(dur)) FILTER (WHERE from_end <= 3) AS end_,
                   avg(ln(dur)) FILTER (WHERE from_end > 3 AND from_end <= n - 5) AS before_
            FROM r WHERE n >= 20 AND dur > 0 GROUP BY u, sess)
        """
    ).fetchone()[0]


def tasks_per_session_question_over_transcription(con) -> float:
    """Geometric mean session length on the yes/no workflow over that on transcription."""
    return con.execute(
        "SELECT exp(avg(ln(n)) FILTER (WHERE wf = '24113') - avg(ln(n)) FILTER (WHERE wf = '26021')) FROM sessions"
    ).fetchone()[0]


def test_habits_come_back_at_the_same_hour_and_repeat_their_session_lengths(shaped):
    day, half = gaps_near_a_day_and_half_a_day(shaped["habits"])
    assert day > 5 * max(half, 1), (day, half)
    corr = (
        shaped["habits"]
        .execute(
            """
            SELECT corr(ln(n), ln(prev_n)) FROM
            (SELECT n, lag(n) OVER (PARTITION BY u, wf ORDER BY sess) AS prev_n FROM sessions)
            WHERE prev_n IS NOT NULL
            """
        )
        .fetchone()[0]
    )
    assert corr > 0.5


def test_habits_depend_on_the_workflow_and_do_not_slow_down(shaped):
    assert tasks_per_session_question_over_transcription(shaped["habits"]) > 2.5
    assert tasks_per_session_question_over_transcription(shaped["default"]) < 2.0
    assert abs(end_of_session_slowdown(shaped["habits"])) < 0.08
    assert end_of_session_slowdown(shaped["default"]) > 0.3


def test_traits_have_no_daily_rhythm_and_only_some_slow_down(shaped):
    day, half = gaps_near_a_day_and_half_a_day(shaped["traits"])
    assert day < half, (day, half)
    default_day, default_half = gaps_near_a_day_and_half_a_day(shaped["default"])
    assert default_day > 1.5 * default_half
    # about 40% tire: a slow-down on average, smaller than the default's where most do
    assert 0.08 < end_of_session_slowdown(shaped["traits"]) < end_of_session_slowdown(shaped["default"])
