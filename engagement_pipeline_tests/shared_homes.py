"""Pipeline states that several test modules read, built once per session (fixtures in conftest.py).

* The trained home (test_scoring, test_servers): a 6,000-row generated export
  plus hand-made volunteers around a UTC midnight, ingested, modelled, checked
  and trained on in process, with the latest version crowned.
* The scored home (test_crashes, test_privacy): see crash_helpers.build_scored_home.

Tests never write to these: each takes a private copy (`copy_home`), or the
scored home's snapshot restored to the same path. MLflow stores absolute
artifact locations, so a copy still loads its models from the original
home's mlartifacts/, which nobody writes after the build.

A new MLflow sqlite store costs seconds of schema migrations (alembic, one
commit each: 1.9 s of CPU and 5-7 s on a busy disk here). Homes that train
start from a copy of one store migrated once per session
(`make_mlflow_store_template`, `new_mlflow_store`); MLflow itself then adds
its Default experiment, and the project the `engagement` one, as in a store
it had just made. Some homes still let MLflow create the store from nothing
(test_training's engagement_model asset test, the serving tests').
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest

from engagement_pipeline_tests.conftest import QUICK_TRAINING, csv_text
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.training_fixtures import crown_latest_version_by_hand

HEADER = [
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
]  # fmt: skip
# Hand-made volunteers after the generated data (which ends 2025-09-15), around a UTC midnight.
BOUNDARY_ROWS = [
    # user 9001: only at 23:59:59 on the 20th
    ["90000001", "late", "9001", "ip1", "1", "w", "1", "2025-09-20 23:59:59 UTC", "", "", "{}", "[]", "{}", "1"],
    # user 9002: only at 00:00:00 on the 21st
    ["90000002", "early", "9002", "ip2", "1", "w", "1", "2025-09-21 00:00:00 UTC", "", "", "{}", "[]", "{}", "1"],
    # user 9003: three on the 20th, one on the 19th (counts only the 20th; history includes the 19th)
    ["90000003", "busy", "9003", "ip3", "1", "w", "1", "2025-09-19 12:00:00 UTC", "", "", "{}", "[]", "{}", "1"],
    ["90000004", "busy", "9003", "ip3", "1", "w", "1", "2025-09-20 08:00:00 UTC", "", "", "{}", "[]", "{}", "1"],
    ["90000005", "busy", "9003", "ip3", "1", "w", "1", "2025-09-20 08:01:00 UTC", "", "", "{}", "[]", "{}", "1"],
    ["90000006", "busy", "9003", "ip3", "1", "w", "1", "2025-09-20 08:03:30 UTC", "", "", "{}", "[]", "{}", "1"],
    # user 9004: active on the 19th only
    ["90000007", "gone", "9004", "ip4", "1", "w", "1", "2025-09-19 18:00:00 UTC", "", "", "{}", "[]", "{}", "1"],
]  # fmt: skip


def make_mlflow_store_template(path: Path) -> Path:
    """An MLflow sqlite store at `path`, created and migrated by MLflow, then emptied of its one row of data.

    MLflow adds the Default experiment (id 0, its artifact location derived from
    the working directory) when it opens a store without one, so it is deleted:
    each copy gets its own, from the MLflow that opens it, exactly as a new store would.
    """
    import mlflow

    uri = f"sqlite:///{path}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()  # creates and migrates the store
    with closing(sqlite3.connect(path)) as con, con:
        con.execute("delete from experiments")
        assert con.execute("select count(*) from runs").fetchone() == (0,)
    return path


def new_mlflow_store(template: Path, home: Path) -> Path:
    """Give `home` (which has no MLflow store yet) a copy of `template` as its mlflow.db."""
    from engagement_pipeline.resources import private_folder

    store = private_folder(home) / "mlflow.db"  # a home the pipeline would make: its owner's only
    assert not store.exists(), store
    shutil.copyfile(template, store)  # a new file: the mode a new store gets (the umask's), not the template's
    return store


def build_trained_home(home: Path, mlflow_store_template: Path) -> dict:
    """ENGAGEMENT_HOME of a small pipeline with a champion; returns what the training asset reported."""
    from engagement_pipeline.ingest.assets import ingest_assets, ingest_checks
    from engagement_pipeline.model.assets import engagement_model
    from engagement_pipeline.sample import write_export
    from engagement_pipeline.transform.sql_models import sql_model_assets, sql_model_checks

    exports = home.parent / "exports"
    exports.mkdir(parents=True)
    write_export(exports / "generated.csv", n_classifications=6_000, seed=3)
    (exports / "boundary.csv").write_text(csv_text(HEADER, BOUNDARY_ROWS))
    new_mlflow_store(mlflow_store_template, home)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGAGEMENT_HOME", str(home))
        env.setenv("ENGAGEMENT_EXPORTS_DIR", str(exports))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = dg.materialize(
            [*ingest_assets, *ingest_checks, *sql_model_assets(), *sql_model_checks, engagement_model],
            resources=project_resources(),
            run_config={"ops": {"engagement_model": {"config": QUICK_TRAINING}}},
        )
        assert result.success
        # a tiny export cannot pass the promotion gate: these tests are about what happens after it
        crown_latest_version_by_hand(project_resources()["tracking"])
    (reported,) = [
        {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey("engagement_model")
    ]
    return reported


def copy_home(source: Path, home: Path) -> Path:
    """A private copy of `source` as `home` (a test's ENGAGEMENT_HOME), replacing whatever was there."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(source, home, ignore=shutil.ignore_patterns("*.lock"))
    (home / "dagster").mkdir(exist_ok=True)
    return home
