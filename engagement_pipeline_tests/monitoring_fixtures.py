"""One small real world for the monitoring and report tests, built once per test session.

A champion is trained (quickly) on an 8k-classification generated export,
which stores its drift reference in MLflow. Then the project "grows": the
warehouse is rebuilt from a 150k-classification export of the same generator
(another seed; ~60 volunteers a day instead of ~10, which PSI needs to tell a
shift from noise), and the champion scores days after its training period.

`shift_task_durations` makes the tasks of one day take 5x longer (browser
clocks: started_at moves back) and rebuilds the SQL models, as a day of a
new, slower workflow would.
"""

import datetime as dt
from pathlib import Path

import dagster as dg

from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline.model.assets import engagement_model
from engagement_pipeline.sample import write_export
from engagement_pipeline.transform.sql_models import sql_model_assets
from engagement_pipeline_tests.conftest import QUICK_TRAINING
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.shared_homes import new_mlflow_store
from engagement_pipeline_tests.training_fixtures import crown_latest_version_by_hand

TRAIN_ROWS, TRAIN_SEED = 8_000, 3
GROWN_ROWS, GROWN_SEED = 150_000, 11
ORDINARY_DAYS = [f"2025-09-{d:02d}" for d in range(1, 8)]  # after the training period (it ends mid-August)
SHIFTED_DAY = "2025-09-09"


def build_world(base: Path, mlflow_store_template: Path) -> Path:
    """ENGAGEMENT_HOME of the grown project with its champion; built under `base` once, then reused."""
    home = base / "monitoring_world" / "home"
    done = home.parent / "done"
    if done.exists():
        return home
    exports = home.parent / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    new_mlflow_store(mlflow_store_template, home)
    import pytest

    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGAGEMENT_HOME", str(home))
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.setenv("ENGAGEMENT_EXPORTS_DIR", str(exports))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        resources = project_resources()  # of this home: the environment is read when they are built
        write_export(exports / "first.csv", n_classifications=TRAIN_ROWS, seed=TRAIN_SEED)
        trained = dg.materialize(
            [*ingest_assets, *sql_model_assets(), engagement_model],
            resources=resources,
            run_config={"ops": {"engagement_model": {"config": QUICK_TRAINING}}},
        )
        assert trained.success
        # a tiny export cannot pass the promotion gate: these tests are about what happens after it
        crown_latest_version_by_hand(resources["tracking"])
        # the project grows: a new full export, the warehouse rebuilt from it
        (exports / "first.csv").unlink()
        for path in home.glob("warehouse.duckdb*"):
            path.unlink()
        write_export(exports / "grown.csv", n_classifications=GROWN_ROWS, seed=GROWN_SEED)
        assert dg.materialize([*ingest_assets, *sql_model_assets()], resources=resources).success
    done.touch()
    return home


def shift_task_durations(day: str, factor: int = 5) -> None:
    """Every task of `day` takes `factor` times as long; the SQL models are rebuilt (ENGAGEMENT_HOME as set)."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    with project_resources()["warehouse"].connect() as con:
        con.execute(
            "update classifications set started_at = finished_at - (finished_at - started_at) * ? "
            "where created_at >= ? and created_at < ? and started_at is not null and finished_at is not null",
            [factor, start, start + dt.timedelta(days=1)],
        )
    assert dg.materialize(sql_model_assets(), resources=project_resources()).success
