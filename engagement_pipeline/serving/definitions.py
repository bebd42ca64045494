"""Serving's Dagster definitions: `history_snapshot`, what `engagement serve` reads. The server is not an asset."""

import dagster as dg

from engagement_pipeline.serving.history_snapshot import history_snapshot

defs = dg.Definitions(assets=[history_snapshot])
