"""The ingest's Dagster definitions: `classifications`, `rejected_rows` and their checks."""

import dagster as dg

from engagement_pipeline.ingest.assets import ingest_assets, ingest_checks

defs = dg.Definitions(assets=ingest_assets, asset_checks=ingest_checks)
