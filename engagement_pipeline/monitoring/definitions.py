"""Monitoring's Dagster definitions: the drift and realized-quality checks, the morning report and its freshness check.

The report of a night is requested with its scoring (the root definitions.py's `nightly_score_and_report`),
after the scored file and its checks (blocking, so Dagster orders them first: the report shows what they
stored); `nightly_report` writes one day's report on its own, from the checks' stored figures.
"""

import dagster as dg

from engagement_pipeline.monitoring.checks import monitoring_checks
from engagement_pipeline.monitoring.report import engagement_report
from engagement_pipeline.partitions import day_freshness_checks

nightly_report_job = dg.define_asset_job(
    "nightly_report",
    selection=dg.AssetSelection.assets(engagement_report),
    description="Write the morning report of one UTC day: who to reach, drop-off, realized quality, drift.",
)

# Fails when, at 06:00 UTC, the previous day's report has not been written.
freshness_checks = day_freshness_checks(engagement_report)

defs = dg.Definitions(
    assets=[engagement_report],
    asset_checks=[*monitoring_checks, *freshness_checks],
    jobs=[nightly_report_job],
)
