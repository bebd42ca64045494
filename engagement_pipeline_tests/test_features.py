"""Features: leak-free by test, hand-checked on a small history, held by their checks, and built by Dagster."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from engagement_pipeline.resources import Warehouse
from engagement_pipeline.transform.sql_models import (
    FEATURE_KEY_COLUMNS,
    SQL_DIR,
    build_models,
    discover_models,
    feature_columns_numeric,
    feature_nulls,
    features_one_row_per_classification,
    models_for,
    referenced_tables,
    sql_model_assets,
    sql_model_checks,
)
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.sql_fixtures import (
    connect,
    generate_classifications,
    load_classifications,
    minimal_classifications,
)

FEATURE_MODELS = models_for(["features"])
NULLABLE = next(model for model in discover_models() if model.name == "features").nullable_columns


def build_features(con, frame: pd.DataFrame) -> pd.DataFrame:
    load_classifications(con, frame)
    build_models(con, FEATURE_MODELS)
    return con.sql("select * from features").df().set_index("classification_id").sort_index()


@pytest.fixture
def con(tmp_path):
    with connect(tmp_path / "features.duckdb") as connection:
        yield connection


def test_features_do_not_peek_into_the_future(con):
    """Cut the data at random times T: every feature of every classification at or before T is unchanged."""
    frame = generate_classifications(2500, 25, seed=11)
    full = build_features(con, frame)
    rng = np.random.default_rng(5)
    times = frame["created_at"].sort_values().to_numpy()
    for cut in rng.choice(times[len(times) // 10 :], size=5, replace=False):
        kept = frame[frame["created_at"] <= cut]
        truncated = build_features(con, kept)
        assert len(truncated) == len(kept)
        before = full.loc[truncated.index]
        assert (before[["user_key", "created_at"]] == truncated[["user_key", "created_at"]]).all().all()
        for column in truncated.columns.drop(["user_key", "created_at"]):
            a = before[column].to_numpy(dtype="float64", na_value=np.nan)
            b = truncated[column].to_numpy(dtype="float64", na_value=np.nan)
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=column)


def test_session_features_on_a_hand_worked_history(con):
    # One volunteer: minutes 0, 1, 4 (a 3-minute short break), then 40 (a new 30-minute session), 41.
    base = pd.Timestamp("2024-05-06 09:00:00", tz="UTC")  # a Monday
    frame = minimal_classifications(
        [(cid, "v", base + pd.Timedelta(minutes=m)) for cid, m in enumerate([0, 1, 4, 40, 41])]
    )
    frame["utc_offset_minutes"] = pd.array([120] * 5, dtype="Int32")  # 11:00 on the volunteer's clock
    features = build_features(con, frame)

    assert np.allclose(np.exp(features["log_position_in_session"]), [1, 2, 3, 1, 2])
    assert features["short_breaks_in_session"].tolist() == [0, 0, 1, 0, 0]
    assert np.allclose(np.exp(features["log_sessions_so_far"]), [1, 1, 1, 2, 2])
    assert np.allclose(np.exp(features["log_classifications_so_far"]), [1, 2, 3, 4, 5])
    assert np.allclose(np.expm1(features["log_session_minutes_so_far"]), [0, 1, 4, 0, 1])
    assert np.isnan(features["log_seconds_since_previous"].iloc[0])
    assert np.allclose(np.expm1(features["log_seconds_since_previous"].iloc[1:]), [60, 180, 36 * 60, 60])
    # mean of the in-session gaps so far: none, 60, (60 + 180) / 2, none (new session), 60
    expected_mean_gap = [np.nan, 60, 120, np.nan, 60]
    assert np.allclose(np.expm1(features["log_mean_gap_last_10"]), expected_mean_gap, equal_nan=True)
    # the previous session (3 classifications over 4 minutes) is known only in the second session
    assert features["log_previous_session_classifications"].iloc[:3].isna().all()
    assert np.allclose(np.exp(features["log_previous_session_classifications"].iloc[3:]), 3)
    assert np.allclose(np.expm1(features["log_previous_session_minutes"].iloc[3:]), 4)
    assert np.allclose(np.expm1(features["log_active_minutes_so_far"]), [0, 1, 4, 4, 5])
    assert np.allclose(np.exp(features["log_hours_since_previous_session"].iloc[3:]), 36 / 60)
    assert features["session_gap_vs_usual"].isna().all()  # never two earlier sessions
    # local time: 11:00 on a Monday
    assert np.allclose(features["hour_sin"].iloc[0], np.sin(2 * np.pi * 11 / 24))
    assert np.allclose(features["weekday_sin"].iloc[0], 0.0) and not features["is_weekend"].any()


def test_feature_checks_pass_on_generated_data(con):
    build_features(con, generate_classifications(2000, 30, seed=2))
    assert feature_nulls(con, NULLABLE).passed
    assert features_one_row_per_classification(con).passed
    result = feature_columns_numeric(con)
    assert result.passed and result.metadata["n_features"].value >= 25


def test_feature_checks_fail_on_broken_tables(con):
    build_features(con, generate_classifications(2000, 30, seed=2))
    con.execute("update features set log_position_in_session = null where classification_id % 7 = 0")
    result = feature_nulls(con, NULLABLE)
    assert not result.passed
    assert list(result.metadata["unexpected_nulls"].data) == ["log_position_in_session"]

    con.execute("delete from features where classification_id % 11 = 0")
    assert not features_one_row_per_classification(con).passed
    con.execute("insert into features select * from features limit 3")
    assert not features_one_row_per_classification(con).passed

    con.execute("alter table features add column device_name varchar")
    assert not feature_columns_numeric(con).passed


def test_nullable_features_are_real_columns(con):
    build_features(con, generate_classifications(500, 10, seed=4))
    columns = [name for name, *_ in con.execute("describe features").fetchall()]
    assert tuple(columns[: len(FEATURE_KEY_COLUMNS)]) == FEATURE_KEY_COLUMNS
    assert set(NULLABLE) <= set(columns)


def test_models_are_discovered_with_their_dependencies():
    models = discover_models()
    names = [model.name for model in models]
    assert {"sessions", "labels", "features"} <= set(names)
    for position, model in enumerate(models):
        assert model.description
        assert set(model.deps) <= set(names[:position]) | {"classifications"}
        assert model.layer == model.path.relative_to(SQL_DIR).parts[0]
    staging = [model for model in models if model.layer == "staging"]
    assert any("classifications" in model.deps for model in staging)
    assert referenced_tables("with a as (select * from x) select * from a join y on true") == {"x", "y"}


@dg.asset(key="classifications", group_name="ingest")
def stand_in_classifications(warehouse: Warehouse) -> dg.MaterializeResult:
    """A tiny stand-in for the ingest: generated rows straight into the warehouse."""
    frame = generate_classifications(1500, 20, seed=9)
    with warehouse.connect() as con:
        load_classifications(con, frame)
    return dg.MaterializeResult(metadata={"dagster/row_count": len(frame)})


def test_dagster_materializes_every_model_and_passes_its_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGAGEMENT_HOME", str(tmp_path / "home"))
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"), memory_limit="1GB", threads=2)
    result = dg.materialize(
        [stand_in_classifications, *sql_model_assets(), *sql_model_checks],
        resources=project_resources(warehouse=warehouse),
        run_config={"ops": {"sessions": {"config": {"horizons": [10, 30], "session_gap_minutes": None}}}},
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(sql_model_checks) and all(check.passed for check in checks)

    with warehouse.connect() as con:
        counts = dict(
            con.execute(
                """
                select 'features', count(*) from features union all
                select 'labels_horizons', count(distinct horizon_minutes) from labels union all
                select 'classifications', count(*) from classifications
                """
            ).fetchall()
        )
    assert counts["features"] == counts["classifications"] == 1500
    assert counts["labels_horizons"] == 2
    materialized = {
        event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert materialized["features"]["dagster/row_count"].value == 1500
    assert materialized["sessions"]["horizons"].data == [10, 30]
