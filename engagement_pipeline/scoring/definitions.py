"""Scoring's Dagster definitions: `user_predictions`, the job that scores one day, and its freshness check.

The nightly scoring is not on a clock of its own: the sensor in the root definitions.py requests it
for the last complete day once the nightly refresh has succeeded, so a failed refresh is never
followed by predictions from stale features.
"""

import dagster as dg

from engagement_pipeline.partitions import day_freshness_checks
from engagement_pipeline.scoring.assets import user_predictions

nightly_scoring_job = dg.define_asset_job(
    "nightly_scoring",
    selection=dg.AssetSelection.assets(user_predictions),
    description="Score the users active on one UTC day with the champion model.",
)

# Fails when, at 06:00 UTC, the previous day's partition has not been scored.
freshness_checks = day_freshness_checks(user_predictions)

defs = dg.Definitions(assets=[user_predictions], asset_checks=freshness_checks, jobs=[nightly_scoring_job])
