"""The code location: every asset, check, resource, job and schedule of the pipeline.

    exports -> classifications, rejected_rows        (ingest.py)
            -> sql/ models: sessions, features, labels (sql_models.py)
            -> engagement_model                        (train_asset.py: LSTM + baselines -> MLflow)
            -> user_predictions, one file per UTC day  (scoring.py, nightly at 02:00 UTC)
               + checks feature_drift, realized_quality (monitoring.py)
            -> engagement_report, one HTML page per day (report.py)
    classifications -> history_snapshot          (history_snapshot.py: what `engagement serve` reads)

Runs execute in one process (`in_process_executor`) and the warehouse
resource serializes processes with a file lock, because DuckDB allows one
writing process per database file. Paths and the exports folder reach the
assets as fields of resources, set here from the environment (settings.py,
CONTRACT.md's variables and their defaults). torch, mlflow and sklearn are imported
inside the assets that use them, so loading this module stays fast.
"""

import dagster as dg

from engagement_pipeline.history_snapshot import history_snapshot
from engagement_pipeline.ingest import ingest_assets, ingest_checks
from engagement_pipeline.monitoring import monitoring_checks
from engagement_pipeline.report import engagement_report
from engagement_pipeline.scoring import (
    nightly_scoring_job,
    nightly_scoring_schedule,
    previous_day_schedule,
    user_predictions,
)
from engagement_pipeline.settings import Settings
from engagement_pipeline.sql_models import sql_model_assets, sql_model_checks
from engagement_pipeline.stalled_runs import stalled_runs_sensor
from engagement_pipeline.train_asset import engagement_model

# The nightly scoring reads the warehouse as it is: this job brings in new
# exports and rebuilds the SQL models an hour before it. Training stays a
# deliberate act (materialize `engagement_model`), since it can move the champion.
refresh_warehouse_job = dg.define_asset_job(
    "refresh_warehouse",
    selection=dg.AssetSelection.groups("ingest", "sessions_and_labels") | dg.AssetSelection.assets(history_snapshot),
    description="Ingest new exports, rebuild sessions, features and labels, and the online scorer's history snapshot.",
)
refresh_warehouse_schedule = dg.ScheduleDefinition(
    name="nightly_refresh_schedule",
    job=refresh_warehouse_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    description="Every night at 01:00 UTC, an hour before scoring: new exports in, SQL models rebuilt.",
)

# The morning report of the scored day, an hour after the scoring (it reads that day's predictions file).
nightly_report_job = dg.define_asset_job(
    "nightly_report",
    selection=dg.AssetSelection.assets(engagement_report),
    description="Write the morning report of one UTC day: who to reach, drop-off, realized quality, drift.",
)
nightly_report_schedule = previous_day_schedule(
    nightly_report_job,
    hour_of_day=3,
    name="nightly_report_schedule",
    description="Every night at 03:00 UTC, an hour after scoring: the report of the previous UTC day.",
)


def build_definitions(resources: dict) -> dg.Definitions:
    """The code location with these resources (Settings.resources(); the `engagement` command passes its own)."""
    return dg.Definitions(
        assets=[
            *ingest_assets,
            *sql_model_assets(),
            engagement_model,
            user_predictions,
            engagement_report,
            history_snapshot,
        ],
        asset_checks=[*ingest_checks, *sql_model_checks, *monitoring_checks],
        jobs=[refresh_warehouse_job, nightly_scoring_job, nightly_report_job],
        schedules=[refresh_warehouse_schedule, nightly_scoring_schedule, nightly_report_schedule],
        sensors=[stalled_runs_sensor],
        resources=resources,
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_environment().resources(as_env_vars=True))
