"""The code location: every domain's definitions, merged, with the resources and the executor.

    exports -> classifications, rejected_rows         ingest/
            -> sql/ models: sessions, features, labels  transform/
            -> engagement_model                         model/ (LSTM + baselines -> MLflow, the champion)
            -> user_predictions, one file per UTC day   scoring/ (nightly at 02:00 UTC)
               + checks feature_drift, realized_quality monitoring/
            -> engagement_report, one HTML page per day monitoring/
    classifications -> history_snapshot                 serving/ (what `engagement serve` reads)

Each domain folder has a `definitions.py` with its own `dg.Definitions`
(assets, checks, jobs, schedules); this module merges them and adds what they
share: the resources, the executor and the one job that spans domains, the
nightly refresh. `dg` and the webserver load it through pyproject.toml's
`[tool.dg.project] code_location_target_module` (and workspace.yaml).

Runs execute in one process (`in_process_executor`) and the warehouse
resource serializes processes with a file lock, because DuckDB allows one
writing process per database file. Paths and the exports folder reach the
assets as fields of resources, set here from the environment (settings.py,
CONTRACT.md's variables and their defaults). torch, mlflow and sklearn are imported
inside the assets that use them, so loading this module stays fast.
"""

import dagster as dg

from engagement_pipeline.ingest import definitions as ingest
from engagement_pipeline.model import definitions as model
from engagement_pipeline.monitoring import definitions as monitoring
from engagement_pipeline.ops import definitions as ops
from engagement_pipeline.resources import resources_for
from engagement_pipeline.scoring import definitions as scoring
from engagement_pipeline.serving import definitions as serving
from engagement_pipeline.settings import Settings
from engagement_pipeline.transform import definitions as transform

# Modules, not their `defs`: Dagster refuses a module with more than one Definitions object at its top.
DOMAINS = (ingest, transform, model, scoring, serving, monitoring, ops)

# The nightly scoring reads the warehouse as it is: this job brings in new
# exports and rebuilds the SQL models an hour before it. Training stays a
# deliberate act (materialize `engagement_model`), since it can move the champion.
refresh_warehouse_job = dg.define_asset_job(
    "refresh_warehouse",
    selection=dg.AssetSelection.groups("ingest", "sessions_and_labels") | dg.AssetSelection.assets("history_snapshot"),
    description="Ingest new exports, rebuild sessions, features and labels, and the online scorer's history snapshot.",
)
refresh_warehouse_schedule = dg.ScheduleDefinition(
    name="nightly_refresh_schedule",
    job=refresh_warehouse_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    description="Every night at 01:00 UTC, an hour before scoring: new exports in, SQL models rebuilt.",
)


def build_definitions(resources: dict) -> dg.Definitions:
    """The code location with these resources (`resources_for(settings)`; the `engagement` command passes its own)."""
    shared = dg.Definitions(
        jobs=[refresh_warehouse_job],
        schedules=[refresh_warehouse_schedule],
        resources=resources,
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(*(domain.defs for domain in DOMAINS), shared)


defs = build_definitions(resources_for(Settings.from_environment(), as_env_vars=True))
