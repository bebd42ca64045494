"""The `engagement` command as a newcomer meets it: run as the installed console script.

Its help explains the common jobs; every subcommand's help works; servers bind
to 127.0.0.1 unless told otherwise; `generate` writes an export the real
ingest accepts; bad dates and ranges end with a usage message rather than a
traceback; and scoring without a champion says what to do, after a progress
line.
"""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from engagement_pipeline.cli import (
    build_parser,
    dagster_ui_command,
    days_to_score,
    main,
    mlflow_ui_command,
    summary_line,
)
from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline.ingest.files import PANOPTES_COLUMNS
from engagement_pipeline.resources import CHAMPION_ALIAS
from engagement_pipeline_tests.project import project_resources

SUBCOMMANDS = ("demo", "run", "generate", "score", "mlflow-ui", "dagster-ui")


def engagement(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `engagement` script (or the module, when the script is not installed)."""
    script = Path(sys.executable).with_name("engagement")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "engagement_pipeline.cli"]
    return subprocess.run([*command, *args], env=dict(os.environ), capture_output=True, text=True, timeout=timeout)


def test_help_explains_the_common_jobs():
    result = engagement("--help")
    assert result.returncode == 0, result.stderr
    for subcommand in SUBCOMMANDS:
        assert f"engagement {subcommand}" in result.stdout, subcommand
    for hint in ("--exports", "--rows", "--date", "--start", "--end", "127.0.0.1", "ENGAGEMENT_HOME"):
        assert hint in result.stdout, hint


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_has_help(subcommand):
    result = engagement(subcommand, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: engagement {subcommand}")
    assert "options:" in result.stdout


@pytest.mark.parametrize("subcommand", ["mlflow-ui", "dagster-ui"])
def test_servers_bind_to_localhost_unless_told(subcommand):
    parser = build_parser()
    assert parser.parse_args([subcommand]).host == "127.0.0.1"
    assert parser.parse_args([subcommand, "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_server_commands_use_the_given_address_and_this_environment(settings, tmp_path):
    for command in (
        mlflow_ui_command(settings, "127.0.0.1", 5123),
        dagster_ui_command(tmp_path / "workspace.yaml", "127.0.0.1", 3123),
    ):
        assert command[0] == sys.executable  # runs in the project's environment, whatever PATH says
        assert command[command.index("--host" if "--host" in command else "-h") + 1] == "127.0.0.1"
        assert command[command.index("--port" if "--port" in command else "-p") + 1] in {"5123", "3123"}


def test_mlflow_ui_points_at_the_projects_store(engagement_home, settings):
    command = mlflow_ui_command(settings, "127.0.0.1", 5000)
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{engagement_home / 'mlflow.db'}"
    assert command[command.index("--default-artifact-root") + 1] == (engagement_home / "mlartifacts").as_uri()


def test_generate_writes_an_export_the_ingest_accepts(exports_dir, warehouse):
    out = exports_dir / "sample.csv"
    result = engagement("generate", "--rows", "2000", "--seed", "11", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2,000 classifications" in result.stdout

    with duckdb.connect() as con:
        described = con.execute("select column_name from (describe select * from read_csv(?))", [str(out)])
        header = [name for (name,) in described.fetchall()]
    assert header == list(PANOPTES_COLUMNS)

    materialized = dg.materialize(ingest_assets, resources=project_resources(warehouse=warehouse))
    assert materialized.success
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        stored, rejected = con.execute(
            "select (select count(*) from classifications), (select count(*) from rejected_rows)"
        ).fetchone()
    assert (stored, rejected) == (2000, 0)


UNCLEAR_DAYS = [
    (["--date", "2025-02-30"], "'2025-02-30' is not a date like"),
    (["--date", "yesterday"], "'yesterday' is not a date like"),
    (["--start", "2025-06-02", "--end", "2025-06-01"], "--end 2025-06-01 is before --start 2025-06-02"),
    (["--date", "2025-06-02", "--start", "2025-06-01"], "not both"),
    (["--end", "2025-06-01"], "--end needs a --start"),
]


@pytest.mark.parametrize(("args", "message"), UNCLEAR_DAYS)
def test_score_rejects_unclear_days_with_a_usage_message(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", *args])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("usage: engagement score")
    assert message in stderr


@pytest.mark.parametrize(("args", "message"), [UNCLEAR_DAYS[0], UNCLEAR_DAYS[2]])
def test_the_installed_script_reports_bad_days_without_a_traceback(args, message):
    result = engagement("score", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_score_without_a_day_takes_the_last_complete_day_with_data_or_says_there_is_none(settings, capsys):
    assert days_to_score(None, None, None) == []  # the default, looked up in the warehouse
    with pytest.raises(SystemExit) as exit_info:
        main(["score"])
    assert "No complete UTC day with classifications" in str(exit_info.value.code)


def test_score_of_a_day_outside_the_partitions_says_which_days_exist(settings):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--date", "2030-01-01"])
    message = str(exit_info.value.code)
    assert "2030-01-01 cannot be scored" in message and "from 2015-01-01 to" in message


def test_days_to_score_is_inclusive():
    day = dt.date(2025, 6, 30)
    assert days_to_score(day, None, None) == [day]
    assert days_to_score(None, day, None) == [day]
    assert days_to_score(None, day, dt.date(2025, 7, 2)) == [day, dt.date(2025, 7, 1), dt.date(2025, 7, 2)]


def test_summary_line_reports_what_an_asset_did():
    line = summary_line(
        "classifications", {"dagster/row_count": dg.MetadataValue.int(6000), "rows_inserted": 6000, "files_read": 1}
    )
    assert line == "  done: classifications (6,000 rows in the table; this run: 6,000 new rows stored)"
    rejected = summary_line(
        "rejected_rows",
        {"dagster/row_count": dg.MetadataValue.int(0), "rows_inserted": 150_000, "rows_rejected_this_run": 0},
    )
    assert rejected == "  done: rejected_rows (0 rows in the table; this run: 150,000 new rows stored, 0 rows rejected)"
    assert summary_line("stg_users", {}) == "  done: stg_users"
    trained = summary_line("engagement_model", {"champion_decision": "first model", "promoted": True})
    assert "champion: first model" in trained


def test_score_without_a_champion_shows_progress_then_says_what_to_do():
    result = engagement("score", "--date", "2025-06-30")
    assert result.returncode not in (0, 2)
    assert "scoring 2025-06-30 (1/1) ..." in result.stdout
    output = result.stdout + result.stderr
    assert f"No `{CHAMPION_ALIAS}` version" in output and "engagement_model" in output
    assert "failed in user_predictions: " in result.stderr  # the step and its own error, last thing printed


def test_run_scores_only_complete_days_never_today(exports_dir, warehouse, settings):
    import datetime as dt

    from engagement_pipeline import ingest
    from engagement_pipeline.cli import latest_complete_days
    from engagement_pipeline_tests.project import project_resources

    storage = project_resources()["storage"]
    from engagement_pipeline_tests.conftest import csv_text

    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=1, microsecond=0)
    days = [today - dt.timedelta(days=n) for n in (3, 2, 1, 0)]
    rows = [[str(100 + i), "", "7", day.strftime("%Y-%m-%d %H:%M:%S UTC")] for i, day in enumerate(days)]
    (exports_dir / "recent.csv").write_text(csv_text(["classification_id", "user_name", "user_id", "created_at"], rows))
    with warehouse.connect() as con:
        ingest.ingest_exports(
            con, ingest.find_exports(exports_dir), ingest.load_salt(storage.salt_file), storage.root / "tmp"
        )
    assert latest_complete_days(settings, 2) == [days[1].date().isoformat(), days[2].date().isoformat()]
