"""Synthetic `features` and `labels` tables with a learnable, sequence-shaped signal.

Stand-ins for the SQL models' outputs, so the training tests (and the training
benchmark) run on tiny data of the same shape. Volunteers work in sessions
separated by hours; within a session they tire: each classification takes
longer and the gaps grow as the session nears its end. The current row shows
part of that, the trend over the last few rows shows more, which is what an
LSTM over the history can exploit and a per-row model cannot fully.

Labels follow CONTRACT.md's rule (sessions here are separated by far more than
any horizon, so a session is the same for every W): continues when
e - t >= W, stops when e - t < W and data_end - e >= W, otherwise censored.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

HORIZONS = (10, 20, 30)
FEATURE_COLUMNS = (
    "seconds_since_previous",
    "duration_seconds",
    "session_position",
    "session_elapsed_seconds",
    "user_classifications_so_far",
    "hour_of_day",
    "is_anonymous",
)


def synthetic_classifications(n_rows: int, seed: int = 0, mean_session_length: float = 10.0) -> pd.DataFrame:
    """One row per classification with its features and its session's end time, all vectorized."""
    rng = np.random.default_rng(seed)
    n_sessions = max(2, int(n_rows / mean_session_length))
    lengths = rng.geometric(1.0 / mean_session_length, size=n_sessions)
    lengths = lengths[np.cumsum(lengths) <= n_rows] if lengths.sum() > n_rows else lengths
    n = int(lengths.sum())
    n_users = max(2, n_sessions // 4)
    session_user = np.sort(rng.integers(0, n_users, size=len(lengths)))
    session_start = (
        np.datetime64("2024-01-01T00:00:00", "us").astype(np.int64)
        + rng.integers(0, 60 * 24 * 3600, size=len(lengths)) * 1_000_000
    )
    session_of_row = np.repeat(np.arange(len(lengths)), lengths)
    first_row_of_session = np.cumsum(lengths) - lengths
    position = np.arange(n) - first_row_of_session[session_of_row]
    progress = position / lengths[session_of_row]  # 0 at the start, -> 1 at the session's end
    pace = rng.lognormal(4.3, 0.25, size=len(lengths))[session_of_row]  # seconds, per session
    fatigue = 1.0 + 4.0 * progress**2
    duration = pace * fatigue * rng.lognormal(0.0, 0.2, size=n)
    gap = duration + rng.exponential(5.0, size=n)
    gap[first_row_of_session] = 0.0
    elapsed = np.cumsum(gap) - np.repeat(np.cumsum(gap)[first_row_of_session], lengths)
    created = session_start[session_of_row] + (elapsed * 1_000_000).astype(np.int64)
    session_end = np.repeat(created[np.cumsum(lengths) - 1], lengths)

    frame = pd.DataFrame(
        {
            "classification_id": rng.permutation(n).astype(np.int64) + 1_000,
            "user_key": np.char.add("u", session_user[session_of_row].astype(str)).astype(object),
            "created_us": created,
            "session_end_us": session_end,
            "duration_seconds": np.where(rng.random(n) < 0.05, np.nan, duration),
            "session_position": position,
            "session_elapsed_seconds": elapsed,
            "hour_of_day": (created // 3_600_000_000) % 24,
            "is_anonymous": (session_user[session_of_row] % 5 == 0),
        }
    ).sort_values(["user_key", "created_us", "classification_id"], ignore_index=True)
    same_user = frame["user_key"].to_numpy()[1:] == frame["user_key"].to_numpy()[:-1]
    since_previous = np.full(len(frame), np.nan)
    since_previous[1:] = np.where(same_user, np.diff(frame["created_us"].to_numpy()) / 1e6, np.nan)
    frame.insert(4, "seconds_since_previous", since_previous)
    frame.insert(8, "user_classifications_so_far", frame.groupby("user_key").cumcount())
    return frame


def write_tables(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, horizons=HORIZONS) -> None:
    """Write `features` and `labels` shaped like the SQL models' tables."""
    con.execute("SET TimeZone = 'UTC'")
    con.register("synthetic", frame)
    features = ", ".join(FEATURE_COLUMNS)
    con.execute(
        f"""
        create or replace table features as
        select classification_id, user_key, make_timestamptz(created_us) as created_at, {features}
        from synthetic
        """
    )
    con.execute(
        """
        create or replace table labels as
        with h as (select unnest(?::integer[]) as horizon_minutes),
        bounds as (select max(created_us) as data_end from synthetic)
        select s.classification_id, h.horizon_minutes,
               s.session_end_us - s.created_us >= h.horizon_minutes * 60000000 as continues
        from synthetic s, h, bounds
        where s.session_end_us - s.created_us >= h.horizon_minutes * 60000000
           or data_end - s.session_end_us >= h.horizon_minutes * 60000000
        """,
        [list(horizons)],
    )
    con.unregister("synthetic")


def make_warehouse(path: Path, n_rows: int = 3_000, seed: int = 0) -> Path:
    """A DuckDB file at `path` holding synthetic `features` and `labels`."""
    with duckdb.connect(str(path)) as con:
        write_tables(con, synthetic_classifications(n_rows, seed=seed))
    return path


def read_dataset(path: Path):
    """The training Dataset of a warehouse file (load_dataset on a read-only, UTC connection)."""
    from engagement_pipeline.model.training import load_dataset

    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return load_dataset(con)


def crown_latest_version_by_hand(tracking) -> str:
    """Give the `champion` alias to the latest registered version by hand, bypassing the promotion gate.

    The version's recorded decision says so ("crowned by hand"), and `promoted` = true, which
    `find_champion` requires of any champion.

    For tests of scoring and serving whose few-thousand-row exports hold too few
    volunteers in the test period for the gate's bootstrap interval to clear 0.5
    (6,000 generated rows: 24 test volunteers, interval ~[0.43, 0.85]). A test of
    the gate itself must never call this.
    """
    from engagement_pipeline.model.registry import DECISION_TAG, PROMOTED_TAG
    from engagement_pipeline.resources import CHAMPION_ALIAS

    client = tracking.client()
    name = tracking.registered_model_name
    latest = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    client.set_model_version_tag(
        name, latest.version, DECISION_TAG, "crowned by hand in a test fixture, not by the gate"
    )
    client.set_model_version_tag(name, latest.version, PROMOTED_TAG, "true")
    client.set_registered_model_alias(name, CHAMPION_ALIAS, latest.version)
    return str(latest.version)
