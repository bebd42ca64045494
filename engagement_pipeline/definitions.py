"""The code location: every asset, check, resource, job and schedule of the pipeline.

Runs execute in one process (`in_process_executor`) and the warehouse
resource serializes processes with a file lock, because DuckDB allows one
writing process per database file.
"""

import dagster as dg

from engagement_pipeline.ingest import ingest_assets, ingest_checks
from engagement_pipeline.resources import Tracking, Warehouse
from engagement_pipeline.sql_models import sql_model_assets, sql_model_checks

defs = dg.Definitions(
    assets=[*ingest_assets, *sql_model_assets],
    asset_checks=[*ingest_checks, *sql_model_checks],
    resources={"warehouse": Warehouse(), "tracking": Tracking()},
    executor=dg.in_process_executor,
)
