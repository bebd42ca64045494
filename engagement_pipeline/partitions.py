"""The daily partitions, the last complete day and the freshness deadline that every domain shares.

A partition is one UTC day. Its first day is read from the environment
(ENGAGEMENT_PARTITIONS_START) when the code location loads, since partitions
are part of an asset's definition. Scoring, its checks and the report use the
same definition, so a day means the same thing everywhere.
"""

import datetime as dt
import warnings

import dagster as dg

from engagement_pipeline.settings import Settings

daily_partitions = dg.DailyPartitionsDefinition(start_date=Settings.from_environment().partitions_start, timezone="UTC")

# By 06:00 UTC the last complete day is scored and reported, or its freshness check fails: the nightly
# refresh starts at 01:00 (ENGAGEMENT_NIGHTLY_CRON) and a night takes minutes, so five hours cover a
# retry. A night moved later than about 05:00 by ENGAGEMENT_NIGHTLY_CRON fails this check every day.
FRESHNESS_DEADLINE_CRON = "0 6 * * *"

# The run tag naming the day a night scores: set by the nightly refresh, read by the sensor that follows it.
NIGHT_TAG = "engagement/night"


def last_complete_day(moment: dt.datetime | None = None) -> str:
    """The UTC day before `moment` (default now): the day a night starting at `moment` scores."""
    moment = moment or dt.datetime.now(dt.UTC)
    return (moment.astimezone(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")


def day_freshness_checks(asset) -> list:
    """A check on `asset` that fails when, at the deadline, the last complete day's partition is missing.

    Dagster 1.13 marks these builders superseded by FreshnessPolicy, whose state is not an asset
    check: a check is what shows red beside the asset, alerts like the project's other checks, and
    says which partition is missing. Their warnings are silenced here, where they are built.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(
            dg.build_time_partition_freshness_checks(
                assets=[asset], deadline_cron=FRESHNESS_DEADLINE_CRON, timezone="UTC"
            )
        )


def day_freshness_sensor(checks: list) -> dg.SensorDefinition:
    """The daemon's sensor that runs the freshness checks (every 5 minutes, on without anyone turning it on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=checks,
            minimum_interval_seconds=300,
            name="freshness_checks_sensor",
            default_status=dg.DefaultSensorStatus.RUNNING,
        )
