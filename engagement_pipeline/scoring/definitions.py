"""Scoring's Dagster definitions: `user_predictions` and the nightly job and schedule that score the last day."""

import dagster as dg

from engagement_pipeline.partitions import previous_day_schedule
from engagement_pipeline.scoring.assets import user_predictions

nightly_scoring_job = dg.define_asset_job(
    "nightly_scoring",
    selection=dg.AssetSelection.assets(user_predictions),
    description="Score the users active on one UTC day with the champion model.",
)

# Fires at 02:00 UTC and requests the partition of the last complete day.
nightly_scoring_schedule = previous_day_schedule(
    nightly_scoring_job,
    hour_of_day=2,
    name="nightly_scoring_schedule",
    description="Every night at 02:00 UTC, score the previous (last complete) UTC day.",
)

defs = dg.Definitions(assets=[user_predictions], jobs=[nightly_scoring_job], schedules=[nightly_scoring_schedule])
