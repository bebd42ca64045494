"""Test data for the SQL models: generated `classifications` with realistic structure.

Volunteers work in bursts: many classifications tens of seconds apart, now
and then a short break of a few minutes, then hours or days away. Gaps are
drawn around the label horizons (10-30 minutes) on purpose so that the
horizon and gap rules disagree on real cases, created_at is rounded to whole
seconds so ties happen, and browser clocks are sometimes missing or reversed.
"""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

SCHEMA_SQL = Path(__file__).resolve().parent.parent / "engagement_pipeline" / "ingest" / "sql" / "schema.sql"
DEVICE_CLASSES = np.array(["desktop", "mobile", "tablet", "unknown"])


def generate_classifications(n_rows: int, n_users: int, seed: int = 0, start: str = "2024-03-01") -> pd.DataFrame:
    """`n_rows` classifications by `n_users` volunteers, with every column of the schema."""
    rng = np.random.default_rng(seed)
    user = np.sort(rng.integers(0, n_users, n_rows))
    first_of_user = np.r_[True, user[1:] != user[:-1]]

    kind = rng.choice(4, n_rows, p=[0.86, 0.07, 0.04, 0.03])  # in a burst, short break, near a horizon, away
    gap_seconds = np.select(
        [kind == 0, kind == 1, kind == 2],
        [
            rng.exponential(40, n_rows).round(),
            rng.uniform(120, 540, n_rows).round(),
            rng.choice([600, 900, 1200, 1500, 1800, 1801, 2400], n_rows) + rng.integers(-1, 2, n_rows),
        ],
        default=rng.exponential(2 * 86400, n_rows).round() + 1800,
    )
    user_start = rng.uniform(0, 20 * 86400, n_users).round()
    # a running sum restarted at each user's first row: the user's own timeline
    steps = np.where(first_of_user, 0.0, gap_seconds)
    total = np.cumsum(steps)
    offset_in_user = total - np.maximum.accumulate(np.where(first_of_user, total, 0.0))
    seconds = user_start[user] + offset_in_user
    created_at = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(seconds, unit="s")

    task = rng.lognormal(3.3, 0.8, n_rows)
    clock = rng.choice(3, n_rows, p=[0.9, 0.07, 0.03])  # fine, missing, reversed
    finished_at = created_at - pd.to_timedelta(rng.uniform(0, 2, n_rows), unit="s")
    started_at = finished_at - pd.to_timedelta(np.where(clock == 2, -task, task), unit="s")
    anonymous_user = rng.random(n_users) < 0.15
    offset_user = rng.choice([-480, -300, 0, 60, 330, 600], n_users).astype("float")
    offset_user[rng.random(n_users) < 0.1] = np.nan

    return pd.DataFrame(
        {
            "classification_id": rng.permutation(n_rows).astype("int64") + 1_000,
            "user_key": np.char.add("user-", user.astype(str)),
            "is_anonymous": anonymous_user[user],
            "workflow_id": np.where(rng.random(n_rows) < 0.1, 2, 1).astype("int64"),
            "workflow_version": "1.1",
            "created_at": created_at,
            "started_at": pd.Series(started_at).where(clock != 1),
            "finished_at": pd.Series(finished_at).where(clock != 1),
            "utc_offset_minutes": pd.array(offset_user[user], dtype="Int32"),
            "device_class": DEVICE_CLASSES[rng.integers(0, 4, n_users)][user],
            "browser_session": None,
            "gold_standard": None,
            "expert": None,
            "subject_ids": None,
            "source_file": "generated.csv",
            "source_line": np.arange(2, n_rows + 2),
            "ingested_at": pd.Timestamp("2025-01-01", tz="UTC"),
        }
    )


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB file in UTC, as Warehouse.connect gives it (without the lock)."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET threads = 2")
    return con


def load_classifications(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
    """Create the ingest's tables (schema.sql) and replace `classifications` by `frame`'s rows."""
    con.execute(SCHEMA_SQL.read_text())
    con.execute("delete from classifications")
    con.register("generated_classifications", frame)
    try:
        con.execute("insert into classifications by name select * from generated_classifications")
    finally:
        con.unregister("generated_classifications")


def minimal_classifications(rows: list[tuple[int, str, str]]) -> pd.DataFrame:
    """A `classifications` frame from (classification_id, user_key, created_at) triples; other columns bare."""
    ids, users, times = zip(*rows) if rows else ((), (), ())
    n = len(ids)
    return pd.DataFrame(
        {
            "classification_id": pd.array(ids, dtype="int64"),
            "user_key": list(users),
            "is_anonymous": [False] * n,
            "workflow_id": pd.array([1] * n, dtype="int64"),
            "created_at": pd.to_datetime(list(times), utc=True),
            "device_class": ["desktop"] * n,
            "source_file": ["hand.csv"] * n,
            "source_line": pd.array(range(2, n + 2), dtype="int64"),
            "ingested_at": pd.Timestamp("2025-01-01", tz="UTC"),
        }
    )
