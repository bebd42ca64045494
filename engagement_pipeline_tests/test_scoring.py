"""Nightly scoring: day boundaries, the contract's Parquet schema, atomic replace, the schedule,
and probabilities equal to what the champion returns through pyfunc for the same windows.

One small real pipeline (generated export plus hand-made volunteers around a
UTC midnight, shared_homes.BOUNDARY_ROWS -> ingest -> SQL models -> a quickly
trained champion) is built once per session (shared with test_servers); each
test scores days on a copy of its warehouse and MLflow store, so tests cannot
disturb each other.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from engagement_pipeline.definitions import defs
from engagement_pipeline.model.registry import load_champion
from engagement_pipeline.model.windows import gather_windows, load_feature_matrix
from engagement_pipeline.scoring.assets import (
    daily_partitions,
    user_predictions,
    write_atomically,
)
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.shared_homes import copy_home

CONTRACT_COLUMNS = [
    "user_key", "as_of", "last_classification_at", "n_classifications",
    "p_continue_10m", "p_continue_20m", "p_continue_30m", "model_name", "model_version", "scored_at",
]  # fmt: skip


@pytest.fixture
def home(trained_home, engagement_home) -> Path:
    """A private copy of the session's trained pipeline (conftest.py) as this test's ENGAGEMENT_HOME."""
    return copy_home(trained_home[0], engagement_home)


def score(day: str, *, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [user_predictions],
        partition_key=day,
        resources=project_resources(),
        raise_on_error=raise_on_error,
    )


def read_day(day: str) -> pd.DataFrame:
    return pd.read_parquet(project_resources()["storage"].prediction_file(day)).set_index("user_key")


def test_utc_day_boundaries_decide_who_is_scored(home):
    score("2025-09-20")
    score("2025-09-21")
    day20, day21 = read_day("2025-09-20"), read_day("2025-09-21")

    assert set(day20.index) == {"9001", "9003"}  # 9004 was active only on the 19th
    assert set(day21.index) == {"9002"}
    assert day20.loc["9003", "n_classifications"] == 3
    assert day20.loc["9001", "n_classifications"] == 1
    assert day20.loc["9003", "last_classification_at"] == pd.Timestamp("2025-09-20 08:03:30", tz="UTC")
    assert day20.loc["9001", "last_classification_at"] == pd.Timestamp("2025-09-20 23:59:59", tz="UTC")
    assert (day20["as_of"] == pd.Timestamp("2025-09-21 00:00:00", tz="UTC")).all()
    assert (day21["as_of"] == pd.Timestamp("2025-09-22 00:00:00", tz="UTC")).all()


def test_a_busy_day_scores_every_active_user_once_with_passing_checks(home):
    day = "2025-07-15"  # inside the generated data
    result = score(day)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        expected = con.execute(
            "select user_key, count(*) from classifications "
            "where created_at >= '2025-07-15 00:00:00+00' and created_at < '2025-07-16 00:00:00+00' group by all"
        ).fetchall()
    frame = read_day(day)
    assert len(expected) >= 3
    assert dict(expected) == frame["n_classifications"].to_dict()
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "one_row_per_user", "probabilities_in_unit_interval", "row_count_matches_active_users",
        "day_has_active_volunteers",
    }  # fmt: skip
    assert all(c.passed for c in checks)
    metadata = result.asset_materializations_for_node("user_predictions")[0].metadata
    assert metadata["users_scored"].value == len(expected)
    assert "q50" in metadata["probabilities"].value


def test_probabilities_equal_the_champion_through_pyfunc_for_the_same_windows(home):
    day = "2025-07-15"
    score(day)
    frame = read_day(day)

    champion = load_champion(project_resources()["tracking"])  # models:/engagement-lstm@champion through mlflow.pyfunc
    as_of = dt.datetime(2025, 7, 16, tzinfo=dt.UTC)
    with project_resources()["warehouse"].connect() as con:
        matrix = load_feature_matrix(con, where_sql="created_at < ?", params=[as_of])
        last = con.execute(
            "select classification_id from features where created_at >= ? and created_at < ? "
            "qualify row_number() over (partition by user_key order by created_at desc, classification_id desc) = 1",
            [as_of - dt.timedelta(days=1), as_of],
        ).fetchall()
    rows = np.flatnonzero(np.isin(matrix.classification_id, [i for (i,) in last]))
    expected = champion.predict(gather_windows(matrix, rows, champion.window))
    for j, horizon in enumerate(champion.horizons):
        got = frame.loc[matrix.user_key[rows], f"p_continue_{horizon}m"].to_numpy()
        np.testing.assert_allclose(got, expected[:, j], rtol=1e-5, atol=1e-6)
    assert (frame["model_name"] == "engagement-lstm").all()
    assert (frame["model_version"] == champion.version).all()


def test_parquet_has_the_contract_schema_for_pandas_and_duckdb(home):
    score("2025-07-15")
    path = project_resources()["storage"].prediction_file("2025-07-15")
    assert path == home / "predictions" / "date=2025-07-15" / "predictions.parquet"

    frame = pd.read_parquet(path)
    assert list(frame.columns) == CONTRACT_COLUMNS
    assert str(frame["as_of"].dtype) == "datetime64[us, UTC]"
    assert frame["n_classifications"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in CONTRACT_COLUMNS if c.startswith("p_continue"))

    with duckdb.connect() as con:
        described = con.execute("describe select * from read_parquet(?)", [str(path)]).fetchall()
    types = {name: kind for name, kind, *_ in described}
    assert types["as_of"] == "TIMESTAMP WITH TIME ZONE" and types["scored_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["user_key"] == "VARCHAR" and types["p_continue_30m"] == "DOUBLE"


def test_a_day_without_classifications_writes_an_empty_file_with_the_full_schema(home):
    result = score("2025-12-25")
    frame = pd.read_parquet(project_resources()["storage"].prediction_file("2025-12-25"))
    assert frame.empty and list(frame.columns) == CONTRACT_COLUMNS
    assert result.asset_materializations_for_node("user_predictions")[0].metadata["users_scored"].value == 0
    (empty_day,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "day_has_active_volunteers"]
    assert not empty_day.passed and empty_day.severity == dg.AssetCheckSeverity.WARN
    assert "No volunteer classified on 2025-12-25" in empty_day.description


def test_a_rerun_replaces_the_file_and_a_failed_write_keeps_the_previous_one(home, monkeypatch):
    score("2025-07-15")
    path = project_resources()["storage"].prediction_file("2025-07-15")
    first = pq.read_table(path)
    score("2025-07-15")
    second = pq.read_table(path)
    assert second.column("scored_at")[0].as_py() > first.column("scored_at")[0].as_py()
    assert second.drop(["scored_at"]).equals(first.drop(["scored_at"]))

    before = path.read_bytes()

    def write_half_then_fail(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(second, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["predictions.parquet"]  # no temporary left behind


def test_no_champion_fails_saying_what_to_materialize(engagement_home, warehouse):
    result = dg.materialize(
        [user_predictions],
        partition_key="2025-07-15",
        resources=project_resources(warehouse=warehouse),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "materialize the `engagement_model` asset first" in failure.step_failure_data.error.to_string()


def test_partitions_are_utc_days_from_the_configured_start():
    assert daily_partitions.timezone == "UTC"
    assert daily_partitions.start.strftime("%Y-%m-%d") == "2007-01-01"
    assert defs.resolve_job_def("nightly_scoring").partitions_def == daily_partitions
