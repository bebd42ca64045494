"""The code location: every domain's definitions, merged, with the resources and the executor.

    exports -> classifications, rejected_rows         ingest/
            -> sql/ models: sessions, features, labels  transform/
            -> engagement_model                         model/ (LSTM + baselines -> MLflow, the champion)
            -> user_predictions, one file per UTC day   scoring/ (nightly, after a successful refresh)
               + checks feature_drift, realized_quality monitoring/
            -> engagement_report, one HTML page per day monitoring/
    classifications -> history_snapshot                 serving/ (what `engagement serve` reads)

Each domain folder has a `definitions.py` with its own `dg.Definitions`
(assets, checks, jobs, schedules); this module merges them and adds what they
share: the resources, the executor and the nights, which span domains:

    ENGAGEMENT_NIGHTLY_CRON (default 01:00 UTC)  nightly_refresh_schedule -> refresh_warehouse
    refresh_warehouse succeeded                   score_after_refresh_sensor -> nightly_score_and_report
                                                  (the last complete day: scored, then reported)
    06:00 UTC                                     freshness checks on user_predictions, engagement_report

The chain is a run-status sensor rather than a second clock or declarative
automation: scoring follows a refresh only when that refresh succeeded (a
failed one leaves its failed run and, at 06:00, failed freshness checks, never
predictions from stale features), the day it scores is the one the refresh
was started for (its `engagement/night` tag, even when the run ends after
midnight), and every step is a run one can read in the UI. `dg` and the webserver load it through pyproject.toml's
`[tool.dg.project] code_location_target_module` (and workspace.yaml).

Runs execute in one process (`in_process_executor`, which records the run's host: ops/run_host.py) and the warehouse
resource serializes processes with a file lock, because DuckDB allows one
writing process per database file. Paths and the exports folder reach the
assets as fields of resources, set here from the environment (settings.py,
CONTRACT.md's variables and their defaults). torch, mlflow and sklearn are imported
inside the assets that use them, so loading this module stays fast.
"""

import dagster as dg

from engagement_pipeline.ingest import definitions as ingest
from engagement_pipeline.model import definitions as model
from engagement_pipeline.monitoring import definitions as monitoring
from engagement_pipeline.ops import definitions as ops
from engagement_pipeline.ops.run_host import host_recording_in_process_executor
from engagement_pipeline.partitions import NIGHT_TAG, day_freshness_sensor, last_complete_day
from engagement_pipeline.resources import resources_for
from engagement_pipeline.scoring import definitions as scoring
from engagement_pipeline.serving import definitions as serving
from engagement_pipeline.settings import Settings
from engagement_pipeline.transform import definitions as transform

# Modules, not their `defs`: Dagster refuses a module with more than one Definitions object at its top.
DOMAINS = (ingest, transform, model, scoring, serving, monitoring, ops)

# The nightly scoring reads the warehouse as it is: this job brings in new
# exports and rebuilds the SQL models an hour before it. Training stays a
# deliberate act (materialize `engagement_model`), since it can move the champion.
refresh_warehouse_job = dg.define_asset_job(
    "refresh_warehouse",
    selection=dg.AssetSelection.groups("ingest", "sessions_and_labels") | dg.AssetSelection.assets("history_snapshot"),
    description="Ingest new exports, rebuild sessions, features and labels, and the online scorer's history snapshot.",
)
NIGHTLY_CRON = Settings.from_environment().nightly_cron


@dg.schedule(
    name="nightly_refresh_schedule",
    job=refresh_warehouse_job,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Every night (ENGAGEMENT_NIGHTLY_CRON, default 01:00 UTC): new exports in, SQL models rebuilt; "
        "scoring and the report of the last complete day follow its success."
    ),
)
def refresh_warehouse_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = last_complete_day(context.scheduled_execution_time)
    return dg.RunRequest(tags={NIGHT_TAG: day})


# The day's predictions, their checks, then its report (which reads both), in one run.
nightly_score_and_report_job = dg.define_asset_job(
    "nightly_score_and_report",
    selection=dg.AssetSelection.assets("user_predictions", "engagement_report"),
    description="Score the users active on one UTC day with the champion, then write that day's report.",
)


@dg.run_status_sensor(
    name="score_after_refresh_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[refresh_warehouse_job],
    request_job=nightly_score_and_report_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a refresh succeeds: score and report the day it was run for (the last complete UTC day).",
)
def score_after_refresh_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    refresh = context.dagster_run
    day = refresh.tags.get(NIGHT_TAG) or last_complete_day()  # a refresh launched by hand: the last complete day
    return dg.RunRequest(run_key=f"after:{refresh.run_id}", partition_key=day, tags={NIGHT_TAG: day})


freshness_sensor = day_freshness_sensor([*scoring.freshness_checks, *monitoring.freshness_checks])


def build_definitions(resources: dict) -> dg.Definitions:
    """The code location with these resources (`resources_for(settings)`; the `engagement` command passes its own)."""
    shared = dg.Definitions(
        jobs=[refresh_warehouse_job, nightly_score_and_report_job],
        schedules=[refresh_warehouse_schedule],
        sensors=[score_after_refresh_sensor, freshness_sensor],
        resources=resources,
        executor=host_recording_in_process_executor,
    )
    return dg.Definitions.merge(*(domain.defs for domain in DOMAINS), shared)


defs = build_definitions(resources_for(Settings.from_environment(), as_env_vars=True))
