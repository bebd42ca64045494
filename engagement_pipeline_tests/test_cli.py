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

from engagement_pipeline.cli import build_parser, days_to_score, main, scorable_days, summary_line
from engagement_pipeline.cli.console import (
    EXIT_CODES,
    EXPORTS_PROBLEM,
    NOTHING_TO_SCORE,
    PORT_IN_USE,
    SERVICE_DOWN,
    CommandFailed,
    classify_failure,
)
from engagement_pipeline.cli.servers import dagster_ui_command, mlflow_ui_command
from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline.ingest.files import PANOPTES_COLUMNS
from engagement_pipeline.settings import Settings
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


def test_a_tracking_server_that_did_not_answer_is_its_own_exit_code_not_a_bug():
    from engagement_pipeline.model.outage import TrackingServerUnavailable

    said = "The MLflow server http://127.0.0.1:9 did not answer (connection refused) while training"

    @dg.asset
    def engagement_model():
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as error:
            raise TrackingServerUnavailable(said) from error

    result = dg.materialize([engagement_model], raise_on_error=False)
    [failure] = [event for event in result.all_events if event.is_step_failure]
    code, message, stack = classify_failure("engagement_model", failure.step_failure_data.error)
    assert (code, message, stack) == (SERVICE_DOWN, said, "")


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
    assert exit_info.value.exit_code == NOTHING_TO_SCORE


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
    # never "150,000 new rows stored, 0 rows rejected" on the rejected rows' line, read as 150,000 rejected
    assert rejected == "  done: rejected_rows (0 rows in the table; this run: 0 rows rejected)"
    assert summary_line("stg_users", {}) == "  done: stg_users"
    trained = summary_line(
        "engagement_model",
        {"champion_decision": "long words", "promoted": False, "epochs_run": 6, "registered_version": "2"},
    )
    assert trained == "  done: engagement_model (6 epochs, version 2, promoted: no)"  # the decision is said once, after


def test_score_before_anything_is_ingested_says_so_with_its_exit_code():
    result = engagement("score", "--date", "2025-06-30")
    assert result.returncode == NOTHING_TO_SCORE, result.stdout + result.stderr
    said = " ".join(result.stderr.split())  # lines wrap at 120 characters, where depends on the home's path length
    assert "Nothing is ingested" in said and "engagement run --exports DIR" in said
    assert "Traceback" not in result.stderr


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


def ingest_days(exports_dir, warehouse, days: list[str]) -> None:
    """One classification at noon UTC of each day, ingested by the real ingest."""
    from engagement_pipeline import ingest
    from engagement_pipeline_tests.conftest import csv_text

    storage = project_resources()["storage"]
    rows = [[str(100 + i), "", "7", f"{day} 12:00:00 UTC"] for i, day in enumerate(days)]
    (exports_dir / "days.csv").write_text(csv_text(["classification_id", "user_name", "user_id", "created_at"], rows))
    with warehouse.connect() as con:
        ingest.ingest_exports(
            con, ingest.find_exports(exports_dir), ingest.load_salt(storage.salt_file), storage.root / "tmp"
        )


def test_score_after_the_data_ends_says_so_and_a_range_is_cut_to_the_data(exports_dir, warehouse, capsys):
    ingest_days(exports_dir, warehouse, ["2024-03-01", "2024-03-02", "2024-03-04"])
    with pytest.raises(CommandFailed) as after:
        main(["score", "--date", "2024-03-05"])
    assert after.value.exit_code == NOTHING_TO_SCORE
    assert str(after.value.code) == (
        "Nothing to score on 2024-03-05: it is after the data ends (the classifications run from 2024-03-01 to "
        "2024-03-04)."
    )
    with pytest.raises(CommandFailed, match="before the data begins"):
        main(["score", "--start", "2024-02-01", "--end", "2024-02-28"])
    days = scorable_days(Settings.from_environment(), [dt.date(2024, 3, d) for d in range(3, 8)])
    assert days == [dt.date(2024, 3, 3), dt.date(2024, 3, 4)]  # the day without data inside the span is kept
    assert "Scoring 2024-03-03 to 2024-03-04 only" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["missing", "empty", "a file"])
def test_run_refuses_an_exports_folder_it_cannot_use_naming_the_option(tmp_path, engagement_home, kind):
    folder = tmp_path / "exports"
    if kind == "empty":
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "notes.txt").write_text("not an export")
    elif kind == "a file":
        folder.write_text("x")
    with pytest.raises(CommandFailed) as refused:
        main(["run", "--exports", str(folder)])
    assert refused.value.exit_code == EXPORTS_PROBLEM
    message = str(refused.value.code)
    assert message.startswith(f"--exports {folder}: ")
    assert "ENGAGEMENT_EXPORTS_DIR" not in message
    assert sorted(p.name for p in engagement_home.iterdir()) == ["dagster"]  # nothing created: no run started
    assert not any((engagement_home / "dagster").iterdir())


def test_the_script_ends_an_expected_condition_with_its_code_and_one_short_message(tmp_path):
    result = engagement("run", "--exports", str(tmp_path / "nowhere"))
    assert result.returncode == EXPORTS_PROBLEM
    assert result.stderr == f"--exports {tmp_path / 'nowhere'}: no such folder.\n"
    assert result.stdout == ""


def test_every_exit_code_is_in_the_readme():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Exit codes")[1].split("\n## ")[0]
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in section, (code, meaning)


@pytest.mark.parametrize("subcommand", ["mlflow-ui", "dagster-ui"])
def test_a_busy_port_ends_a_ui_command_at_once_with_one_line(subcommand):
    import socket
    import time

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = engagement(subcommand, "--port", str(port), timeout=60)
    assert result.returncode == PORT_IN_USE
    assert result.stderr.strip().splitlines() == [
        f"Port {port} on 127.0.0.1 is in use by another process: stop it, or choose another with --port N."
    ]
    assert time.monotonic() - started < 20  # no server was started


def test_a_server_that_fails_to_bind_is_stopped_and_the_command_ends_with_port_in_use():
    import time

    from engagement_pipeline.cli.servers import run_server

    # another process took the port between the check and the server's bind: the server says so and, like
    # `dg dev`, keeps running (its daemon) unless stopped
    server = [sys.executable, "-c", "import time; print('ERROR: [Errno 98] Address already in use', flush=True); "
              "time.sleep(120)"]  # fmt: skip
    started = time.monotonic()
    with pytest.raises(CommandFailed) as failed:
        run_server(server, dict(os.environ), "127.0.0.1", 0)
    assert failed.value.exit_code == PORT_IN_USE
    assert time.monotonic() - started < 20


def run_with_console(assets, capsys) -> tuple[object, str]:
    """Materialize `assets` through the command's console logger, as `_materialize` does; (result, stdout)."""
    from engagement_pipeline.cli.console import console_logger_def

    done = []
    defs = dg.Definitions(assets=assets)
    job = defs.resolve_implicit_global_asset_job_def().with_logger_defs(
        {
            "console": console_logger_def(
                lambda asset, metadata: print(summary_line(asset, metadata)) or done.append(asset)
            )
        }
    )
    result = job.execute_in_process(run_config={"loggers": {"console": {}}}, raise_on_error=False)
    return result, capsys.readouterr().out


def test_each_done_line_comes_when_its_asset_finishes_and_dagster_events_stay_quiet(capsys):
    @dg.asset
    def first(context) -> dg.MaterializeResult:
        context.log.info("reading")
        return dg.MaterializeResult(metadata={"dagster/row_count": 3})

    @dg.asset(deps=[first])
    def second(context) -> None:
        context.log.info("training " + "long words " * 20)

    result, out = run_with_console([first, second], capsys)
    assert result.success
    lines = out.splitlines()
    assert lines[:2] == ["  first: reading", "  done: first (3 rows in the table)"]
    assert lines.index("  done: first (3 rows in the table)") < next(
        i for i, line in enumerate(lines) if line.startswith("  second: training")
    )
    assert lines[-1] == "  done: second"
    assert all(len(line) <= 120 for line in lines)  # long messages are wrapped
    assert "STEP_SUCCESS" not in out and result.run_id not in out  # no event stream, no run ids


def test_a_bug_prints_its_stack_trace_once_and_an_expected_condition_none(capsys, settings):
    from engagement_pipeline.cli import raise_run_failure
    from engagement_pipeline.cli.console import BUG, NO_CHAMPION
    from engagement_pipeline.model.registry import NoChampionError

    @dg.asset
    def broken() -> None:
        {}["missing key"]  # a bug

    @dg.asset
    def no_model() -> None:
        raise NoChampionError("No `champion` version: materialize `engagement_model` first.")

    for asset, code in ((broken, BUG), (no_model, NO_CHAMPION)):
        result, out = run_with_console([asset], capsys)
        assert not result.success and out == ""  # the failure is not logged on the console as it happens
        with pytest.raises(CommandFailed) as failed:
            raise_run_failure(settings, result, 0)
        assert failed.value.exit_code == code
        message = str(failed.value.code)
        if code == BUG:
            assert message.count("line ") >= 1 and message.count("in broken") == 1, message
            assert message.endswith("KeyError: 'missing key'") and "DagsterExecutionStepExecutionError" not in message
        else:
            assert message == "no_model: No `champion` version: materialize `engagement_model` first."


@pytest.mark.slow  # trains through Dagster in a subprocess (~40 s on 2 busy cores)
def test_a_small_real_export_trains_is_not_promoted_and_the_run_still_succeeds(tmp_path):
    """The Michigan sample (2,000 real rows, 16 logged-in volunteers): trained, registered, rightly not promoted."""
    from engagement_pipeline_tests.conftest import FIXTURES

    exports = tmp_path / "michigan"
    exports.mkdir()
    (exports / "michigan-sample.csv").write_bytes((FIXTURES / "michigan-sample.csv").read_bytes())
    result = engagement("run", "--exports", str(exports))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    assert "Model version 1 was trained and registered but not promoted: " in result.stdout
    assert "Nothing was scored: scoring needs a promoted model" in result.stdout
    for noise in ("Traceback", "PreviewWarning", "Downloading artifacts", "INFO mlflow", "__ASSET_JOB"):
        assert noise not in output, noise
    assert max(len(line) for line in lines) <= 120
    done_labels = lines.index("  done: labels (5,997 rows in the table)")
    assert done_labels < next(i for i, line in enumerate(lines) if "epoch 0/" in line)  # not after training
    assert "  done: engagement_model (" in result.stdout and "promoted: no)" in result.stdout

    # the run's page in MLflow opens on its key figures (its description)
    import mlflow

    from engagement_pipeline.resources import EXPERIMENT_NAME

    store = f"sqlite:///{Settings.from_environment().home / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith("**Not promoted.** new v1 mean test ROC-AUC ")
    for w in (10, 20, 30):
        test = run.data.metrics[f"test_roc_auc_{w}m"]
        assert f"| {w} min | {test:.3f} (" in description

    scored = engagement("score", "--date", "2017-01-10")
    assert scored.returncode == 4, scored.stdout + scored.stderr
    assert "Traceback" not in scored.stderr and len(scored.stderr.splitlines()) <= 6
    assert scored.stderr.startswith("user_predictions: No `champion` version of the registered model")


def test_a_long_silent_step_says_it_is_still_working():
    import time

    from engagement_pipeline.ops.progress import heartbeat

    started = time.perf_counter()
    said, beats = [started], []
    with heartbeat(said, beats.append, started, every_s=1.0):
        time.sleep(3.5)  # one fit of a baseline that says nothing for longer than every_s
    assert len(beats) >= 2 and all(b >= 1.0 for b in beats)
    said, beats = [time.perf_counter()], []
    with heartbeat(said, beats.append, started, every_s=1.0):
        for _ in range(6):  # a step that speaks often enough on its own is left alone
            time.sleep(0.4)
            said[0] = time.perf_counter()
    assert beats == []
