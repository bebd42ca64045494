"""Benchmark: all SQL models against a bare sessionization, and the labels against pandas.

    .venv/bin/python benchmarks/bench_sql_models.py --rows 1000000
    .venv/bin/python benchmarks/bench_sql_models.py --rows 10000000   # several minutes

In one run, on the same generated `classifications` table:

(a) every SQL model (sql/**/*.sql, default SessionRules), built as the assets build them;
(b) the bare bound: one query that sessionizes the table for one gap (gap flag,
    running sum, session end per classification), i.e. the least any
    sessions/labels pipeline must do.
(c) the labels alone the way a notebook would compute them in pandas
    (sort, groupby/diff/cumsum/transform), against the SQL models labels
    needs (stg_classifications, int_user_timeline, sessions, labels).

Reports a/b, c / SQL-labels, and peak RSS of the process for the SQL part
(read from getrusage before pandas runs; pandas' own peak is reported after).
DuckDB runs under memory_limit (default 3GB) so it spills instead of dying.
The data are generated in DuckDB (range() + random()): heavy-tailed users,
bursts of work tens of seconds apart, short breaks, gaps near the horizons,
long absences.
"""

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engagement_pipeline.transform.sql_models import SessionRules, build_model, discover_models  # noqa: E402

SCHEMA_SQL = REPO / "engagement_pipeline" / "ingest" / "sql" / "schema.sql"
LABEL_MODELS = ("stg_classifications", "int_user_timeline", "sessions", "labels")

GENERATE_SQL = """
insert into classifications
with draws as (
    select
        i,
        floor(pow(random(), 3) * getvariable('n_users'))::bigint as user_number,
        random() as kind,
        random() as size,
        random() as clock
    from range(getvariable('n_rows')) as t(i)
),
gaps as (
    select
        *,
        round(case
            when kind < 0.86 then -40 * ln(1 - size)              -- in a burst
            when kind < 0.93 then 120 + 420 * size                -- short break
            when kind < 0.97 then 600 + 1200 * size               -- near a horizon
            else 1800 - 2 * 86400 * ln(1 - size)                  -- away
        end) as gap_seconds
    from draws
),
timelines as (
    select
        *,
        timestamptz '2024-01-01 00:00:00+00'
            + to_seconds((user_number % 2000) * 600 + sum(gap_seconds) over (partition by user_number order by i)
                         - gap_seconds) as created_at
    from gaps
)
select
    i + 1 as classification_id,
    'user-' || user_number as user_key,
    user_number % 7 = 0 as is_anonymous,
    1 + (size * 10)::bigint % 2 as workflow_id,
    '1.1' as workflow_version,
    created_at,
    case when clock > 0.07 then created_at - to_seconds(1 + 60 * size) end as started_at,
    case when clock > 0.07 then created_at - to_seconds(1) end as finished_at,
    [-300, 0, 60, 330, 600][1 + user_number % 5] as utc_offset_minutes,
    ['desktop', 'mobile', 'tablet', 'unknown'][1 + user_number % 4] as device_class,
    null as browser_session,
    null as gold_standard,
    null as expert,
    null as subject_ids,
    'generated.csv' as source_file,
    i + 2 as source_line,
    timestamptz '2025-01-01 00:00:00+00' as ingested_at
from timelines
"""

BARE_SESSIONIZATION_SQL = """
create or replace table bare_sessions as
with gaps as (
    select
        classification_id, user_key, created_at,
        coalesce(created_at - lag(created_at) over user_order >= interval 10 minute, true) as starts_session
    from classifications
    window user_order as (partition by user_key order by created_at, classification_id)
),
numbered as (
    select *, sum(starts_session::integer) over (
        partition by user_key order by created_at, classification_id
        rows between unbounded preceding and current row
    ) as session_number
    from gaps
)
select *, max(created_at) over (partition by user_key, session_number) as session_end
from numbered
"""


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def pandas_labels(con: duckdb.DuckDBPyConnection, horizons: list[int]):
    """The labels as a notebook would write them: one sort, then groupby/diff/cumsum/transform per horizon."""
    import pandas as pd

    frame = con.sql("select classification_id, user_key, created_at from classifications").df()
    started = time.perf_counter()
    frame = frame.sort_values(["user_key", "created_at", "classification_id"], ignore_index=True)
    data_end = frame["created_at"].max()
    gap = frame.groupby("user_key", sort=False)["created_at"].diff()
    out = []
    for horizon in horizons:
        window = pd.Timedelta(minutes=horizon)
        session = (gap.isna() | (gap >= window)).cumsum()
        session_end = frame.groupby(session, sort=False)["created_at"].transform("max")
        left = session_end - frame["created_at"]
        continues = pd.Series(pd.NA, index=frame.index, dtype="boolean")
        continues[left >= window] = True
        continues[(left < window) & (data_end - session_end >= window)] = False
        known = continues.notna()
        out.append(
            pd.DataFrame(
                {
                    "classification_id": frame.loc[known, "classification_id"],
                    "horizon_minutes": horizon,
                    "continues": continues[known].astype(bool),
                }
            )
        )
    labels = pd.concat(out, ignore_index=True)
    return labels, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=0, help="default: rows / 50")
    parser.add_argument("--memory-limit", default="3GB")
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: DuckDB's default)")
    parser.add_argument("--skip-pandas", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_sql_models_"))
    try:
        con = duckdb.connect(str(workdir / "warehouse.duckdb"))
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET memory_limit = ?", [args.memory_limit])
        con.execute("SET temp_directory = ?", [str(workdir / "duckdb_tmp")])
        if args.threads:
            con.execute("SET threads = ?", [args.threads])
        con.execute(SCHEMA_SQL.read_text())
        con.execute("SET VARIABLE n_rows = ?", [args.rows])
        con.execute("SET VARIABLE n_users = ?", [args.users or max(args.rows // 50, 1)])
        started = time.perf_counter()
        con.execute(GENERATE_SQL)
        con.execute("checkpoint")
        print(f"generated {args.rows:,} classifications in {time.perf_counter() - started:.1f}s")

        variables = SessionRules().sql_variables()
        model_seconds: dict[str, float] = {}
        for model in discover_models():
            started = time.perf_counter()
            rows = build_model(con, model, variables)
            model_seconds[model.name] = time.perf_counter() - started
            print(f"  {model.name:<22} {rows:>12,} rows {model_seconds[model.name]:8.2f}s")
        all_models = sum(model_seconds.values())

        started = time.perf_counter()
        con.execute(BARE_SESSIONIZATION_SQL)
        bare = time.perf_counter() - started
        sql_peak = peak_rss_gib()

        print(f"(a) all SQL models            {all_models:8.2f}s")
        print(f"(b) bare sessionization        {bare:8.2f}s")
        print(f"a/b                            {all_models / bare:8.2f}")
        print(f"peak RSS (SQL part)            {sql_peak:8.2f} GiB")

        if not args.skip_pandas:
            sql_labels = sum(model_seconds[name] for name in LABEL_MODELS)
            labels, pandas_seconds = pandas_labels(con, variables["horizons"])
            (sql_rows,) = con.execute("select count(*) from labels").fetchone()
            print(f"(c) pandas labels              {pandas_seconds:8.2f}s ({len(labels):,} rows; SQL: {sql_rows:,})")
            print(f"    SQL labels path            {sql_labels:8.2f}s ({' + '.join(LABEL_MODELS)})")
            print(f"pandas / SQL labels            {pandas_seconds / sql_labels:8.2f}x")
            print(f"peak RSS incl. pandas          {peak_rss_gib():8.2f} GiB")
        con.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
