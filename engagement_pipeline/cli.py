"""The `engagement` command: the common jobs of the pipeline from a shell.

Every command runs on the same Dagster instance ($DAGSTER_HOME, by default
$ENGAGEMENT_HOME/dagster), so what it does shows up in the Dagster UI. Runs
print the assets' own progress lines (rows ingested, epochs, users scored)
and one summary line per asset; servers bind to 127.0.0.1 unless told
otherwise, and are started with this interpreter (`python -m ...`), so they
run in the project's environment even when its bin/ is not on PATH.
"""

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

from engagement_pipeline.ops.disk_space import (
    MIN_FREE_MB,
    WHAT_TO_DO,
    disk_full_message,
    is_disk_full,
    require_free_space,
    says_disk_full,
)
from engagement_pipeline.settings import Settings

COMMON_JOBS = """\
Predict whether Zooniverse volunteers keep working 10, 20 and 30 minutes from now.

common jobs:
  engagement demo                       ingest the bundled sample, build sessions/features/labels,
                                        train and register a model, score the last days
  engagement run --exports DIR          the same on a folder of real Zooniverse exports
                                        (*.csv, *.csv.gz: the project builder's Data Exports page)
  engagement generate --rows N --out F  write a realistic sample export of any size
  engagement score                      score the last complete UTC day that has data
  engagement score --date 2025-06-30    score one UTC day with the champion model
  engagement score --start D --end D    score every day of a range (inclusive)
  engagement dagster-ui                 the Dagster UI and daemon on http://127.0.0.1:3000
  engagement mlflow-ui                  the MLflow UI on the project's store, http://127.0.0.1:5000
  engagement serve                      score raw export rows online, http://127.0.0.1:5001/invocations
  engagement deploy up|status|down      PostgreSQL, an MLflow server and the Dagster daemon and UI for the
                                        home: the nights then run by themselves (README, Deploy)
"""

# What a run prints per asset when it is done, when the asset reports it: the table as it
# now is, then what this run did to it (so "0 rows" and "150,000 new rows" never read as one).
TABLE_FIELDS = (("dagster/row_count", "rows in the table"),)
RUN_FIELDS = (
    ("rows_inserted", "new rows stored"),
    ("rows_rejected_this_run", "rows rejected"),
    ("epochs_run", "epochs"),
    ("registered_version", "version"),
    ("champion_decision", "champion:"),
    ("users_scored", "users scored"),
    ("path", "file"),
)


DAGSTER_YAML = """\
# Written by `engagement`: one run at a time, because every run uses the one DuckDB file.
# A run whose process dies is marked failed within a minute by `stalled_runs_sensor`
# (engagement_pipeline/ops/stalled_runs.py), so the queue never waits behind it.
run_queue:
  max_concurrent_runs: 1
run_monitoring:
  enabled: true
  # a run that never starts (its process died while launching) fails after 3 minutes
  start_timeout_seconds: 180
  poll_interval_seconds: 60
telemetry:
  enabled: false
"""

# The code location by module name, so the same file serves a checkout and an installed wheel.
WORKSPACE_YAML = """\
# Written by `engagement`: the code location of engagement_pipeline, by module.
load_from:
  - python_module:
      module_name: engagement_pipeline.definitions
"""


def check_home(settings: Settings) -> None:
    """Refuse a home that the sqlite stores cannot live in, before anything is created there."""
    if "?" in str(settings.home) or "#" in str(settings.home):
        raise SystemExit(
            f"ENGAGEMENT_HOME={settings.home} contains '?' or '#', which sqlite URIs (the Dagster instance's "
            "and MLflow's stores) cannot hold: choose a folder whose path has neither."
        )


def state_folders(settings: Settings) -> dict[str, Path]:
    """The folders a run writes to, by the variable that names them (for the free-space check and its messages)."""
    return {"ENGAGEMENT_HOME": settings.home, "DAGSTER_HOME": settings.dagster_instance_home}


def disk_full_exit(settings: Settings, min_free_mb: float, cause: str) -> SystemExit:
    """The one message for a run that ran out of disk space, as the command's exit."""
    return SystemExit(disk_full_message(state_folders(settings), cause.replace(WHAT_TO_DO, ""), min_free_mb))


def prepare_dagster_home(settings: Settings) -> Path:
    """The Dagster instance folder (DAGSTER_HOME, default <home>/dagster), with a dagster.yaml."""
    home = settings.dagster_instance_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def summary_line(asset: str, metadata: dict) -> str:
    """One line per materialized asset: what an operator wants to see at the end of a step."""

    def described(fields) -> list[str]:
        parts = []
        for key, label in fields:
            if key in metadata:
                value = getattr(metadata[key], "value", metadata[key])
                counted = isinstance(value, int) and not isinstance(value, bool)
                parts.append(f"{value:,} {label}" if counted else f"{label} {value}")
        return parts

    table, run = described(TABLE_FIELDS), described(RUN_FIELDS)
    groups = table + ([("this run: " if table else "") + ", ".join(run)] if run else [])
    return f"  done: {asset}" + (f" ({'; '.join(groups)})" if groups else "")


def _materialize(
    settings: Settings, scoring: bool, partition_key: str | None = None, min_free_mb: float = MIN_FREE_MB
) -> None:
    """Materialize the daily assets (scoring and its report, for one partition) or every other asset.

    The console shows the assets' INFO lines (their progress) rather than
    Dagster's DEBUG event stream, then one summary line per asset. A step
    that failed for lack of disk space ends the command with the disk-full message.
    """
    import dagster as dg

    from engagement_pipeline.definitions import build_definitions
    from engagement_pipeline.ops.run_host import HOST_TAG, this_host
    from engagement_pipeline.ops.stalled_runs import fail_stalled_runs
    from engagement_pipeline.resources import resources_for

    defs = build_definitions(resources_for(settings))
    daily = dg.AssetSelection.assets("user_predictions", "engagement_report")  # the day's file, then its report
    selection = daily if scoring else dg.AssetSelection.all() - daily
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.from_config(str(prepare_dagster_home(settings))) as instance:
        for run_id in fail_stalled_runs(instance):
            print(f"  marked run {run_id} failed: its process is gone", flush=True)
        result = job.execute_in_process(
            instance=instance,
            asset_selection=list(selection.resolve(defs.resolve_asset_graph())),
            partition_key=partition_key,
            tags={HOST_TAG: this_host()},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        print(summary_line(materialization.asset_key.to_user_string(), materialization.metadata), flush=True)
    if not result.success:
        reasons = [
            f"{event.step_key}: {root_cause(event.step_failure_data.error)}"
            for event in result.all_events
            if event.is_step_failure
        ]
        full = [reason for reason in reasons if says_disk_full(reason, state_folders(settings), min_free_mb)]
        if full:
            raise disk_full_exit(settings, min_free_mb, f"run {result.run_id} failed in {full[0]}")
        raise SystemExit(
            f"Run {result.run_id} failed in "
            + "; ".join(reasons or ["(no step failed: see the run)"])
            + "\nSee the run in the Dagster UI (engagement dagster-ui)."
        )


def root_cause(error) -> str:
    """The innermost message of a Dagster error chain (the asset's own exception, not Dagster's wrapper)."""
    if error is None:
        return "unknown error"
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def latest_complete_days(settings: Settings, days: int) -> list[str]:
    """The last `days` UTC days that have classifications and are complete (valid partitions), oldest first."""
    import duckdb

    from engagement_pipeline.partitions import daily_partitions
    from engagement_pipeline.resources import resources_for

    with resources_for(settings)["warehouse"].connect() as con:
        try:
            rows = con.execute(
                "select distinct cast(created_at as date)::varchar as day from classifications order by day desc"
            ).fetchall()
        except duckdb.CatalogException:  # nothing ingested yet
            rows = []
    complete = [day for (day,) in rows if daily_partitions.has_partition_key(day)]  # today is not a partition yet
    return sorted(complete[:days])


def cmd_run(args) -> int:
    # the demo is the bundled sample, whatever the shell says
    settings = args.settings.with_exports(None if args.command == "demo" else Path(args.exports))
    print(f"ENGAGEMENT_HOME={settings.home}")
    print("1/3 ingest, SQL models and training (every unpartitioned asset) ...", flush=True)
    _materialize(settings, scoring=False, min_free_mb=args.min_free_mb)
    days = latest_complete_days(settings, args.score_days)
    for i, day in enumerate(days, 1):
        print(f"2/3 scoring {day} ({i}/{len(days)}) ...", flush=True)
        _materialize(settings, scoring=True, partition_key=day, min_free_mb=args.min_free_mb)
    print(f"3/3 done. Predictions: {settings.home / 'predictions'}")
    print("Next: `engagement dagster-ui` and `engagement mlflow-ui` to look around.")
    return 0


def cmd_generate(args) -> int:
    from engagement_pipeline.sample import main as generate_main

    argv = ["--rows", str(args.rows), "--seed", str(args.seed), "--shape", args.shape, "--out", str(args.out)]
    return generate_main(argv)


def _parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-06-30 (YYYY-MM-DD)") from None


def days_to_score(date: dt.date | None, start: dt.date | None, end: dt.date | None) -> list[dt.date]:
    """The UTC days `engagement score` scores: --date alone, or --start [--end] inclusive, or [] for the default.

    ValueError when unclear.
    """
    if date is not None and (start is not None or end is not None):
        raise ValueError("give either --date D, or --start D [--end D], not both")
    if date is not None:
        return [date]
    if start is None:
        if end is not None:
            raise ValueError("give --date D, or --start D [--end D] (--end needs a --start)")
        return []  # nothing given: the last complete day that has data (cmd_score looks it up)
    end = end or start
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    return [start + dt.timedelta(days=offset) for offset in range((end - start).days + 1)]


def scorable_days(settings: Settings, days: list[dt.date]) -> list[dt.date]:
    """`days`, or the last complete day with classifications; SystemExit naming the problem when there is none."""
    from engagement_pipeline.partitions import daily_partitions

    if not days:
        latest = latest_complete_days(settings, 1)
        if not latest:
            raise SystemExit(
                f"No complete UTC day with classifications in {settings.home / 'warehouse.duckdb'} yet: run "
                "`engagement run --exports DIR` (or `engagement demo`) first, or name a day with --date D."
            )
        days = [dt.date.fromisoformat(latest[0])]
    outside = [day for day in days if not daily_partitions.has_partition_key(day.isoformat())]
    if outside:
        keys = daily_partitions.get_partition_keys()
        span = f"from {keys[0]} to {keys[-1]}" if keys else "none yet"
        raise SystemExit(
            f"{outside[0]} cannot be scored: the daily partitions run {span} (UTC days; today is not complete "
            "yet, and ENGAGEMENT_PARTITIONS_START sets the first day)."
        )
    return days


def cmd_score(args) -> int:
    settings = args.settings
    args.days = scorable_days(settings, args.days)
    for i, day in enumerate(args.days, 1):
        print(f"scoring {day} ({i}/{len(args.days)}) ...", flush=True)
        _materialize(settings, scoring=True, partition_key=day.isoformat(), min_free_mb=args.min_free_mb)
    print(f"Predictions: {settings.home / 'predictions'}")
    return 0


SERVER_STOP_TIMEOUT_S = 30


def _exec(argv: list[str], environment: dict[str, str]) -> int:
    """Run a server in the foreground until it exits, and stop it cleanly when we are stopped.

    Ctrl-C in a terminal reaches the server too; a SIGTERM sent to this
    process alone (a service manager, `kill`) is passed on as SIGINT, the
    signal `dg dev` and `mlflow server` shut their own workers down on
    (its `dagster dev` server ignores SIGTERM). Either way no traceback, and a server
    that does not stop within SERVER_STOP_TIMEOUT_S is killed.
    """
    print("$ " + " ".join(argv), flush=True)
    # A shell that starts us in the background (`engagement dagster-ui &`) sets SIGINT to "ignore",
    # which the server would inherit and then never stop: give it the default disposition back.
    process = subprocess.Popen(argv, env=environment, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGINT))
    try:
        try:
            return process.wait()
        except KeyboardInterrupt:
            try:
                return process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def mlflow_ui_command(settings: Settings, host: str, port: int, workers: int = 2) -> list[str]:
    """The MLflow UI against the project's tracking store and artifact folder.

    Two workers rather than MLflow's four: one person browsing needs no more,
    and it starts twice as fast on a small machine.
    """
    from engagement_pipeline.resources import resources_for

    tracking = resources_for(settings)["tracking"]
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking.uri(),
               "--host", host, "--port", str(port), "--workers", str(workers)]  # fmt: skip
    if tracking.project_store:
        tracking.artifacts.mkdir(parents=True, exist_ok=True)
        command += ["--default-artifact-root", tracking.artifacts.as_uri()]
    return command


def dagster_ui_command(workspace: Path, host: str, port: int) -> list[str]:
    """`dg dev` (webserver and daemon, so the schedules run) on the instance's workspace.yaml.

    `dg dev`, not `dagster dev`, which Dagster 1.13 marks as superseded; given a
    workspace file it starts Dagster's own dev server on it, in this environment.
    The workspace names the module, not a path, so an installed wheel works as a checkout does.
    """
    return [sys.executable, "-m", "dagster_dg_cli.cli", "dev", "-w", str(workspace), "-h", host, "-p", str(port)]


def cmd_mlflow_ui(args) -> int:
    from engagement_pipeline.deploy.command import deployed_elsewhere

    if (deployed := deployed_elsewhere(args.settings, "mlflow")) is not None:
        return deployed
    return _exec(mlflow_ui_command(args.settings, args.host, args.port), args.settings.child_environment())


def cmd_dagster_ui(args) -> int:
    from engagement_pipeline.deploy.command import deployed_elsewhere

    if (deployed := deployed_elsewhere(args.settings, "webserver")) is not None:
        return deployed
    workspace = prepare_dagster_home(args.settings) / "workspace.yaml"
    if not workspace.exists() or workspace.read_text() != WORKSPACE_YAML:
        workspace.write_text(WORKSPACE_YAML)
    return _exec(dagster_ui_command(workspace, args.host, args.port), args.settings.child_environment())


def cmd_serve(args) -> int:
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.serving.http_app import is_loopback
    from engagement_pipeline.serving.server import serve

    token = os.environ.get("ENGAGEMENT_SERVE_TOKEN") or None
    if not is_loopback(args.host) and token is None:
        raise SystemExit(
            f"serving on {args.host} (not loopback) needs a token: set ENGAGEMENT_SERVE_TOKEN; "
            "clients send it as `Authorization: Bearer <token>`"
        )
    if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable()):
        raise SystemExit("ENGAGEMENT_SERVE_TOKEN must be at least 16 printable ASCII characters")
    resources = resources_for(args.settings)  # the history snapshot and the salt are the storage's files
    return serve(resources["storage"], args.host, args.port, resources["tracking"], token=token)


def add_min_free_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--min-free-mb",
        type=float,
        default=MIN_FREE_MB,
        metavar="MB",
        help=f"refuse to start unless the disks of ENGAGEMENT_HOME and DAGSTER_HOME have this much free "
        f"(default {MIN_FREE_MB}; 0 skips the check)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engagement",
        description=COMMON_JOBS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "State lives in $ENGAGEMENT_HOME (default ./.engagement); `engagement COMMAND --help` "
            "explains each command. See README.md."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, help_text in (
        ("demo", "run the whole pipeline on the bundled sample export"),
        ("run", "run the whole pipeline on a folder of exports (--exports)"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == "run":
            sub.add_argument("--exports", required=True, help="folder of *.csv / *.csv.gz exports")
        sub.add_argument(
            "--score-days", type=int, default=3, help="score the last N complete UTC days that have data (default 3)"
        )
        add_min_free_option(sub)
        sub.set_defaults(func=cmd_run)

    help_text = "write a realistic sample export (Panoptes CSV format) of any size"
    sub = commands.add_parser("generate", help=help_text, description=help_text)
    sub.add_argument("--rows", type=int, default=150_000, help="classifications to write (default 150,000)")
    sub.add_argument("--seed", type=int, default=7, help="random seed: the same seed writes the same file (default 7)")
    sub.add_argument(
        "--shape",
        default="default",
        help="how the volunteers behave: default (the bundled sample), traits or habits (default: default)",
    )
    sub.add_argument("--out", type=Path, required=True, help="file to write (.csv, or .csv.gz for gzip)")
    sub.set_defaults(func=cmd_generate)

    help_text = "score one UTC day (--date) or a range of days (--start, --end) with the champion model"
    sub = commands.add_parser(
        "score",
        help=help_text,
        description=help_text + "; writes $ENGAGEMENT_HOME/predictions/date=D/predictions.parquet per day.",
    )
    sub.add_argument("--date", type=_parse_day, metavar="YYYY-MM-DD", help="the one day to score")
    sub.add_argument("--start", type=_parse_day, metavar="YYYY-MM-DD", help="first day of a range")
    sub.add_argument("--end", type=_parse_day, metavar="YYYY-MM-DD", help="last day of the range (default: --start)")
    add_min_free_option(sub)
    sub.set_defaults(func=cmd_score, usage_error=sub.error)

    for name, port, func, help_text in (
        ("mlflow-ui", 5000, cmd_mlflow_ui, "the MLflow UI on the project's tracking store (runs, models, champion)"),
        ("dagster-ui", 3000, cmd_dagster_ui, "the Dagster UI and daemon (runs the nightly schedule when it is on)"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        sub.add_argument("--port", type=int, default=port, help=f"port (default {port})")
        sub.set_defaults(func=func)

    help_text = "score raw export rows online with the champion (MLflow's scoring protocol: POST /invocations)"
    sub = commands.add_parser("serve", help=help_text, description=help_text + "; see README, Score online.")
    sub.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; any other needs ENGAGEMENT_SERVE_TOKEN)",
    )
    sub.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    sub.set_defaults(func=cmd_serve)

    from engagement_pipeline.deploy.command import add_parser as add_deploy_parser

    add_deploy_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.settings = Settings.from_environment()
    check_home(args.settings)
    if args.command == "score":
        try:
            args.days = days_to_score(args.date, args.start, args.end)
        except ValueError as error:
            args.usage_error(str(error))  # exits 2 with the usage line
    if args.command not in ("demo", "run", "score"):
        return args.func(args)
    # Before anything is created: a run on a full disk fails in sqlite or DuckDB at some arbitrary point.
    require_free_space(state_folders(args.settings), args.min_free_mb)
    try:
        return args.func(args)
    except Exception as error:  # the disk filled up during the run (Dagster's own sqlite storage, say)
        cause = f"{type(error).__name__}: {error}"
        if is_disk_full(error) or says_disk_full(cause, state_folders(args.settings), args.min_free_mb):
            raise disk_full_exit(args.settings, args.min_free_mb, cause) from None
        raise


if __name__ == "__main__":
    sys.exit(main())
