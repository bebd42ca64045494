"""The SQL models' Dagster definitions: one asset per file of sql/, with their checks."""

import dagster as dg

from engagement_pipeline.transform.sql_models import sql_model_assets, sql_model_checks

defs = dg.Definitions(assets=sql_model_assets(), asset_checks=sql_model_checks)
