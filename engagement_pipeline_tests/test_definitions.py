"""The code location as the Dagster UI shows it: assets, checks, jobs and the schedule.

* A committed snapshot (snapshots/definitions.json) holds every asset key with
  its group, kinds, owners, layer tag, upstream keys and partitions, every
  check (with whether it blocks), every job and every schedule. An accidental
  change (a renamed asset, a lost dependency, a moved schedule) fails with a
  readable diff; an intended one is recorded with
  `UPDATE_SNAPSHOTS=1 .venv/bin/pytest engagement_pipeline_tests/test_definitions.py`
  and the snapshot committed with the change.
* The contract's assets and partitions, a description on every asset and
  check, owners on every asset, and column schemas that match the tables the
  assets really build.
* Loading the code location imports no heavy library (torch, mlflow, sklearn,
  matplotlib): checked in a fresh interpreter, where nothing else could have
  imported them first.
"""

import datetime as dt
import difflib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from engagement_pipeline.definitions import defs
from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline.resources import resources_for
from engagement_pipeline.settings import DEFAULT_PARTITIONS_START
from engagement_pipeline.transform.sql_models import sql_model_assets
from engagement_pipeline_tests.conftest import CAT_EXPORT
from engagement_pipeline_tests.project import project_resources

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
UPDATE_HINT = (
    "If the change is intended, rewrite the snapshot and commit it with the change:\n"
    "    UPDATE_SNAPSHOTS=1 .venv/bin/pytest engagement_pipeline_tests/test_definitions.py"
)
CONTRACT_ASSETS = {"classifications", "labels", "engagement_model", "user_predictions"}
UI_GROUPS = {"ingest", "sessions_and_labels", "training", "scoring"}
HEAVY_MODULES = ("torch", "mlflow", "sklearn", "matplotlib")


def definitions_snapshot(definitions: dg.Definitions) -> dict:
    """What an operator sees of the code location, as plain JSON-able data in a stable order."""
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/")},
            "upstream": sorted(parent.to_user_string() for parent in node.parent_keys),
            "partitions": str(node.partitions_def) if node.partitions_def else None,
        }
    checks: dict[str, dict] = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(check_key)
        checks.setdefault(check_key.asset_key.to_user_string(), {})[check_key.name] = {"blocking": spec.blocking}
    repository = definitions.get_repository_def()
    jobs = {
        job.name: {
            "assets": sorted(key.to_user_string() for key in job.asset_layer.executable_asset_keys),
            "partitions": str(job.partitions_def) if job.partitions_def else None,
        }
        for job in sorted(repository.get_all_jobs(), key=lambda j: j.name)
        if not job.name.startswith("__")  # Dagster's implicit job of all assets
    }
    schedules = {
        schedule.name: {
            "cron": schedule.cron_schedule,
            "timezone": schedule.execution_timezone,
            "job": schedule.job_name,
            "default_status": schedule.default_status.value,
        }
        for schedule in sorted(repository.schedule_defs, key=lambda s: s.name)
    }
    return {"assets": assets, "checks": checks, "jobs": jobs, "schedules": schedules}


def _as_text(snapshot: dict) -> str:
    return json.dumps(snapshot, indent=2, sort_keys=True) + "\n"


# The code location was imported with this process's environment; the snapshot holds the defaults.
START_OVERRIDDEN = pytest.mark.skipif(
    "ENGAGEMENT_PARTITIONS_START" in os.environ,
    reason="ENGAGEMENT_PARTITIONS_START is set, so the partitions are not the default",
)


@START_OVERRIDDEN
def test_definitions_match_the_committed_snapshot():
    live = _as_text(definitions_snapshot(defs))
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(live)
        return
    if not SNAPSHOT.exists():
        pytest.fail(f"No snapshot at {SNAPSHOT}.\n{UPDATE_HINT}", pytrace=False)
    committed = SNAPSHOT.read_text()
    if live != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                live.splitlines(keepends=True),
                fromfile="committed snapshot",
                tofile="live definitions",
            )
        )
        pytest.fail(f"The code location differs from {SNAPSHOT.name}:\n{diff}\n{UPDATE_HINT}", pytrace=False)


def test_snapshot_catches_a_regrouped_asset_and_a_lost_dependency():
    """The snapshot is sensitive to what it is for."""

    def snapshot_text(group: str, deps: list[str]) -> str:
        return _as_text(definitions_snapshot(dg.Definitions(assets=[
            dg.AssetSpec("upstream", group_name="ingest"),
            dg.AssetSpec("labels", group_name=group, deps=deps, kinds={"duckdb"}),
        ])))  # fmt: skip

    reference = snapshot_text("sessions_and_labels", ["upstream"])
    assert snapshot_text("sessions_and_labels", ["upstream"]) == reference
    assert snapshot_text("misc", ["upstream"]) != reference
    assert snapshot_text("sessions_and_labels", []) != reference


def test_contract_assets_groups_and_schedule():
    snapshot = definitions_snapshot(defs)
    assert CONTRACT_ASSETS <= snapshot["assets"].keys()
    assert {asset["group"] for asset in snapshot["assets"].values()} == UI_GROUPS
    assert snapshot["assets"]["classifications"]["group"] == "ingest"
    assert snapshot["assets"]["labels"]["group"] == "sessions_and_labels"
    assert snapshot["assets"]["engagement_model"]["group"] == "training"
    assert snapshot["assets"]["user_predictions"]["group"] == "scoring"

    schedule = snapshot["schedules"]["nightly_refresh_schedule"]
    assert (schedule["cron"], schedule["timezone"]) == ("0 1 * * *", "UTC")
    assert snapshot["jobs"]["nightly_score_and_report"]["assets"] == ["engagement_report", "user_predictions"]


def test_every_asset_and_check_is_described_and_owned():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert (node.description or "").strip(), f"asset {key.to_user_string()} has no description"
        assert node.owners, f"asset {key.to_user_string()} has no owner"
        assert node.kinds, f"asset {key.to_user_string()} has no kinds"
    assert graph.asset_check_keys, "no asset checks at all"
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        assert (spec.description or "").strip(), f"check {check_key.to_user_string()} has no description"


def test_kinds_name_the_technologies():
    nodes = {key.to_user_string(): defs.resolve_asset_graph().get(key) for key in defs.resolve_all_asset_keys()}
    for name, node in nodes.items():
        if node.group_name in {"ingest", "sessions_and_labels"}:
            assert "duckdb" in node.kinds, name
    assert {"pytorch", "mlflow"} <= nodes["engagement_model"].kinds
    assert {"parquet", "mlflow"} <= nodes["user_predictions"].kinds


@START_OVERRIDDEN
def test_user_predictions_are_daily_utc_partitions_from_2015():
    partitions = defs.resolve_asset_graph().get(dg.AssetKey("user_predictions")).partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.timezone == "UTC"
    assert partitions.get_first_partition_key() == DEFAULT_PARTITIONS_START == "2015-01-01"  # CONTRACT.md


def _fresh_import(tmp_path: Path, **env: str) -> dict:
    """Import the code location in a new interpreter; report heavy modules loaded and the partitions."""
    probe = f"""
import json, sys
from engagement_pipeline.definitions import defs
import dagster as dg
partitions = defs.resolve_asset_graph().get(dg.AssetKey("user_predictions")).partitions_def
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY_MODULES!r}))
import os
created = sorted(os.listdir("."))  # the code location writes nothing: no home, no database, no store
print(json.dumps({{"heavy": heavy, "first": partitions.get_first_partition_key(), "timezone": partitions.timezone,
                  "created": created}}))
"""
    environment = {k: v for k, v in os.environ.items() if k != "ENGAGEMENT_PARTITIONS_START"}
    environment.update(ENGAGEMENT_HOME=str(tmp_path / "home"), **env)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=workdir, env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_fresh_import_is_light_and_starts_partitions_in_2015(tmp_path):
    report = _fresh_import(tmp_path)
    assert report["heavy"] == [], f"loading the code location imported {report['heavy']}: import them inside assets"
    assert (report["first"], report["timezone"]) == ("2015-01-01", "UTC")
    assert report["created"] == [], f"importing the code location created {report['created']}"
    assert not (tmp_path / "home").exists(), "importing the code location created ENGAGEMENT_HOME"


def test_importing_sql_models_reads_no_sql_until_asked(tmp_path):
    probe = (
        "import engagement_pipeline.transform.sql_models as m; "
        "print(m.project_models.cache_info().currsize, m.sql_model_assets.cache_info().currsize, "
        "len(m.sql_model_assets()), m.project_models.cache_info().currsize)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    before_models, before_assets, n_assets, after_models = map(int, completed.stdout.split())
    assert (before_models, before_assets) == (0, 0), "importing sql_models discovered or built models"
    assert n_assets >= 3 and after_models == 1


def test_partitions_start_follows_the_environment(tmp_path):
    report = _fresh_import(tmp_path, ENGAGEMENT_PARTITIONS_START="2023-06-15")
    assert (report["first"], report["timezone"]) == ("2023-06-15", "UTC")


def _built_columns(con, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "select column_name, data_type from duckdb_columns() where table_name = ? order by column_index", [table]
    ).fetchall()


def test_declared_column_schemas_match_the_built_tables(exports_dir, warehouse):
    """The column schemas the UI shows before a run are the columns a real run builds."""
    (exports_dir / CAT_EXPORT.name).write_bytes(CAT_EXPORT.read_bytes())
    assets = [*ingest_assets, *sql_model_assets()]
    result = dg.materialize(assets, resources=project_resources(warehouse=warehouse))
    assert result.success

    graph = defs.resolve_asset_graph()
    compared = []
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        for assets_def in assets:
            for key in assets_def.keys:
                schema = graph.get(key).metadata.get("dagster/column_schema")
                assert schema is not None, f"{key.to_user_string()} declares no column schema"
                declared = [(column.name, column.type) for column in schema.columns]
                assert declared == _built_columns(con, key.to_user_string()), key.to_user_string()
                compared.append(key.to_user_string())
    assert {"classifications", "rejected_rows", "sessions", "features", "labels"} <= set(compared)


def test_features_schema_marks_only_the_declared_nullable_columns():
    schema = defs.resolve_asset_graph().get(dg.AssetKey("features")).metadata["dagster/column_schema"]
    nullable = {column.name for column in schema.columns if column.constraints.nullable}
    keys = {"classification_id", "user_key", "created_at"}
    assert nullable and not nullable & keys
    assert {column.name for column in schema.columns} > nullable | keys


def test_the_nightly_refresh_ingests_and_rebuilds_the_models_before_scoring(exports_dir, settings):
    from engagement_pipeline.definitions import build_definitions
    from engagement_pipeline_tests.conftest import copy_real_exports

    defs = build_definitions(
        resources_for(settings)
    )  # resources from this test's environment, as a code server would build them

    refresh = defs.resolve_schedule_def("nightly_refresh_schedule")
    assert (refresh.cron_schedule, refresh.execution_timezone) == ("0 1 * * *", "UTC")

    copy_real_exports(exports_dir)
    result = defs.resolve_job_def(refresh.job_name).execute_in_process()
    assert result.success
    with project_resources()["warehouse"].connect() as con:
        assert con.execute("select count(*) from features").fetchone() == (2153,)
        assert con.execute("select count(distinct horizon_minutes) from labels").fetchone() == (3,)


def test_the_nightly_refresh_names_the_last_complete_utc_day_without_deprecated_calls():
    schedule = defs.resolve_schedule_def("nightly_refresh_schedule")
    tick = dt.datetime(2025, 9, 21, 1, 0, tzinfo=dt.UTC)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.tags["engagement/night"] for r in requests] == ["2025-09-20"]
