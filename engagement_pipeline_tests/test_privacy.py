"""Privacy and exposure: no raw user_ip or user_name anywhere under ENGAGEMENT_HOME after a full run.

The full run (ingest -> SQL models -> training -> scoring one day) is real, in
other processes, on the real fixture exports plus a generated one. Then every
file under ENGAGEMENT_HOME is searched byte for byte, and what is stored in
compressed form (DuckDB's strings, Parquet) is also decoded and searched.
Plus: the salt, the servers' default address, and file names and column
names that look like SQL.
"""

import csv
import sqlite3
import stat
import subprocess
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from engagement_pipeline import cli, ingest
from engagement_pipeline.cli.servers import mlflow_ui_command
from engagement_pipeline.ingest.assets import ingest_assets, ingest_checks
from engagement_pipeline.resources import Warehouse
from engagement_pipeline.settings import Settings
from engagement_pipeline.transform.sql_models import build_models
from engagement_pipeline_tests.conftest import MICHIGAN_EXPORT, csv_text, read_rows
from engagement_pipeline_tests.crash_helpers import prediction_file
from engagement_pipeline_tests.project import project_resources

REPO = Path(__file__).resolve().parent.parent


def raw_identities(exports: Path) -> set[str]:
    """Every user_ip and user_name value in the exports, read with Python's csv module."""
    values: set[str] = set()
    for path in sorted(exports.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                values |= {row.get("user_ip") or "", row.get("user_name") or ""}
    return values - {"", "NA"}


def decoded_warehouse_text(database: Path) -> str:
    """Every VARCHAR value of every table, decoded (DuckDB compresses strings on disk)."""
    with duckdb.connect(str(database)) as con:
        con.execute("checkpoint")
        columns = con.execute(
            "select table_name, column_name from information_schema.columns where data_type = 'VARCHAR' order by all"
        ).fetchall()
        parts = []
        for table, column in columns:  # names from the catalog, quoted as identifiers
            table_sql, column_sql = ('"' + name.replace('"', '""') + '"' for name in (table, column))
            parts += [v for (v,) in con.execute(f"select distinct {column_sql} from {table_sql}").fetchall() if v]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def full_run(scored_home):
    """The session's scored home (conftest.py), freshly restored: the crash tests ran their kills in it."""
    home, env = scored_home()
    return home, Path(env["ENGAGEMENT_EXPORTS_DIR"])


def test_no_raw_user_ip_or_user_name_in_any_file_under_engagement_home(full_run):
    home, exports = full_run
    secrets = raw_identities(exports)
    assert len(secrets) > 300 and any(s.startswith("not-logged-in-") for s in secrets)

    # Everything under the home, and MLflow's artifacts wherever the store says they are
    # (they belong under the home too: see the next test).
    folders = {home, *mlflow_artifact_folders(home)}
    files = {p for folder in folders for p in folder.rglob("*") if p.is_file() and p != home / "user_name_salt"}
    kinds = {p.suffix for p in files} | {p.name for p in files}
    # The search covers the warehouse, MLflow's store and artifacts, predictions and Dagster's storage.
    assert {"warehouse.duckdb", "mlflow.db", ".parquet", ".png", "runs.db", "MLmodel"} <= kinds, kinds
    assert any("dagster" in p.parts for p in files)

    decoded_warehouse_text(home / "warehouse.duckdb")  # checkpoint first: the file holds everything
    needles = [s.encode() for s in secrets]
    hits = {str(p): s for p in files for s in needles if s in p.read_bytes()}
    assert not hits

    # Compressed on disk, so decoded too: DuckDB's strings and the Parquet predictions.
    warehouse_text = decoded_warehouse_text(home / "warehouse.duckdb")
    assert "h:" in warehouse_text  # the hashed keys are there
    assert not [s for s in secrets if s in warehouse_text]
    parquet_text = "\n".join(str(pq.read_table(p).to_pylist()) for p in home.rglob("*.parquet"))
    assert prediction_file(home).exists() and "user_key" in parquet_text
    assert not [s for s in secrets if s in parquet_text]


def mlflow_artifact_folders(home: Path) -> list[Path]:
    """The experiments' artifact folders, as recorded in the MLflow store."""
    with closing(sqlite3.connect(f"{(home / 'mlflow.db').as_uri()}?mode=ro", uri=True)) as con:
        locations = [location for (location,) in con.execute("select artifact_location from experiments")]
    return [
        Path(location.removeprefix("file://"))
        for location in locations
        if Path(location.removeprefix("file://")).exists()
    ]


def test_mlflow_artifacts_live_under_engagement_home(full_run):
    """CONTRACT.md: artifacts under $ENGAGEMENT_HOME/mlartifacts/, not in the working directory."""
    home, _ = full_run
    folders = mlflow_artifact_folders(home)
    assert folders and all(folder.is_relative_to(home / "mlartifacts") for folder in folders), folders


def test_the_salt_is_created_once_private_and_out_of_git(full_run, tmp_path):
    home, exports = full_run
    salt_file = home / "user_name_salt"
    salt = salt_file.read_text()
    assert len(salt) >= 32 and stat.S_IMODE(salt_file.stat().st_mode) == 0o600

    # Another run over the same warehouse reuses it: the same volunteer keeps the same key.
    warehouse = Warehouse(database=str(home / "warehouse.duckdb"))
    with warehouse.connect() as con:
        keys_before = con.execute("select classification_id, user_key from classifications order by 1").fetchall()
        con.execute("delete from ingested_files")  # read every file again
        con.execute("delete from classifications")
        ingest.ingest_exports(con, ingest.find_exports(exports), ingest.load_salt(salt_file), tmp_path)
        keys_after = con.execute("select classification_id, user_key from classifications order by 1").fetchall()
    assert salt_file.read_text() == salt and keys_after == keys_before

    # The default home (and so the salt in it) is ignored by git.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".engagement/user_name_salt"], cwd=REPO)
    assert ignored.returncode == 0


def test_a_killed_ingest_leaves_no_raw_copy_behind(warehouse, exports_dir):
    """A run killed while transcoding leaves a UTF-8 copy of an export (user_ip included); the next run removes it."""
    scratch = warehouse.path.parent / "ingest_tmp"
    scratch.mkdir(parents=True)
    leftover = scratch / f"{ingest.TRANSCODED_PREFIX}k1ll3d.csv"
    leftover.write_bytes(MICHIGAN_EXPORT.read_bytes())
    (exports_dir / "export.csv").write_bytes(MICHIGAN_EXPORT.read_bytes())
    assert dg.materialize([*ingest_assets], resources=project_resources(warehouse=warehouse)).success
    assert not leftover.exists()


def test_servers_bind_to_localhost_by_default():
    parser = cli.build_parser()
    for command in ("dagster-ui", "mlflow-ui"):
        assert parser.parse_args([command]).host == "127.0.0.1"
    args = parser.parse_args(["mlflow-ui"])
    argv = mlflow_ui_command(Settings.from_environment(), args.host, args.port)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "0.0.0.0" not in argv


def test_file_and_column_names_that_look_like_sql_are_only_data(warehouse, exports_dir):
    header, rows = read_rows(MICHIGAN_EXPORT)
    rows = [list(r) for r in rows[:20]]
    rows[3][header.index("created_at")] = "not a time"  # so rejected_rows gets this file's name too
    evil_column = 'x"); drop table classifications; --'
    evil_name = "x'); drop table classifications; --.csv"
    text = csv_text([*header, evil_column, "'; select 1; --"], [r + ["a'b", 'c"d'] for r in rows])
    target = exports_dir / evil_name
    target.write_text(text)

    result = dg.materialize([*ingest_assets, *ingest_checks], resources=project_resources(warehouse=warehouse))
    assert result.success
    with warehouse.connect() as con:
        assert con.execute("select count(*), min(source_file), max(source_file) from classifications").fetchone() == (
            19,
            str(target),
            str(target),
        )
        assert con.execute("select source_file, line_number from rejected_rows").fetchall() == [(str(target), 5)]
        assert con.execute("select source_file from ingested_files").fetchall() == [(str(target),)]
        assert build_models(con)["features"] == 19  # the downstream models still build
    # And a second run recognizes the file by its content.
    assert dg.materialize([*ingest_assets], resources=project_resources(warehouse=warehouse)).success
    with warehouse.connect() as con:
        assert con.execute("select count(*) from classifications").fetchone() == (19,)
    assert project_resources()["storage"].root == warehouse.path.parent
