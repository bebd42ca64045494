"""The operational helpers' Dagster definitions: the sensor that fails runs whose process died."""

import dagster as dg

from engagement_pipeline.ops.stalled_runs import stalled_runs_sensor

defs = dg.Definitions(sensors=[stalled_runs_sensor])
