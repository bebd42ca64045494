"""Monitoring's Dagster definitions: the drift and realized-quality checks, the morning report and its schedule."""

import dagster as dg

from engagement_pipeline.monitoring.checks import monitoring_checks
from engagement_pipeline.monitoring.report import engagement_report
from engagement_pipeline.partitions import previous_day_schedule

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

defs = dg.Definitions(
    assets=[engagement_report],
    asset_checks=monitoring_checks,
    jobs=[nightly_report_job],
    schedules=[nightly_report_schedule],
)
