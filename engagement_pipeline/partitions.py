"""The daily partitions and the nightly schedule shape that every domain shares.

A partition is one UTC day. Its first day is read from the environment
(ENGAGEMENT_PARTITIONS_START) when the code location loads, since partitions
are part of an asset's definition. Scoring, its checks and the report use the
same definition, so a day means the same thing everywhere.
"""

import datetime as dt

import dagster as dg

from engagement_pipeline.settings import Settings

daily_partitions = dg.DailyPartitionsDefinition(start_date=Settings.from_environment().partitions_start, timezone="UTC")


def previous_day_schedule(job, hour_of_day: int, name: str, description: str) -> dg.ScheduleDefinition:
    """Every day at `hour_of_day`:00 UTC, one run of `job` for the partition of the last complete UTC day.

    Written out rather than with `build_schedule_from_partitioned_job`, which calls the deprecated
    `run_request_for_partition` inside Dagster 1.13.
    """

    @dg.schedule(
        cron_schedule=f"0 {hour_of_day} * * *",
        execution_timezone="UTC",
        job=job,
        name=name,
        description=description,
    )
    def previous_day(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        day = (tick.astimezone(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"{name}:{day}", partition_key=day)

    return previous_day
