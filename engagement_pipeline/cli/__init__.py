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
import sys
from pathlib import Path

from engagement_pipeline.cli.checks import (
    check_exports_option,
    latest_complete_days,
    not_promoted_lines,
    scorable_days,
)
from engagement_pipeline.cli.console import (
    BUG,
    DISK_FULL,
    USAGE,
    CommandFailed,
    classify_failure,
    say,
    silence_library_noise,
    wrapped,
)
from engagement_pipeline.cli.instance import open_dagster_instance
from engagement_pipeline.cli.servers import cmd_dagster_ui, cmd_mlflow_ui, cmd_serve
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
# rejected_rows shares the ingest's metadata: its line shows only what was rejected, so that the rows stored
# are never read as rows rejected.
# engagement_model's decision is said once, after the run: its line says only whether it was promoted.
RUN_FIELDS_OF = {
    "rejected_rows": (("rows_rejected_this_run", "rows rejected"),),
    "engagement_model": (("epochs_run", "epochs"), ("registered_version", "version"), ("promoted", "promoted:")),
}


def check_home(settings: Settings) -> None:
    """Refuse a home that the sqlite stores cannot live in, before anything is created there."""
    if "?" in str(settings.home) or "#" in str(settings.home):
        raise CommandFailed(
            USAGE,
            f"ENGAGEMENT_HOME={settings.home} contains '?' or '#', which sqlite URIs (the Dagster instance's "
            "and MLflow's stores) cannot hold: choose a folder whose path has neither.",
        )


def state_folders(settings: Settings) -> dict[str, Path]:
    """The folders a run writes to, by the variable that names them (for the free-space check and its messages)."""
    return {"ENGAGEMENT_HOME": settings.home, "DAGSTER_HOME": settings.dagster_instance_home}


def disk_full_exit(settings: Settings, min_free_mb: float, cause: str) -> SystemExit:
    """The one message for a run that ran out of disk space, as the command's exit (DISK_FULL)."""
    return CommandFailed(
        DISK_FULL, disk_full_message(state_folders(settings), cause.replace(WHAT_TO_DO, ""), min_free_mb)
    )


def summary_line(asset: str, metadata: dict) -> str:
    """One line per materialized asset: what an operator wants to see at the end of a step."""

    def described(fields) -> list[str]:
        parts = []
        for key, label in fields:
            if key in metadata:
                value = getattr(metadata[key], "value", metadata[key])
                value = {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value
                counted = isinstance(value, int)
                parts.append(f"{value:,} {label}" if counted else f"{label} {value}")
        return parts

    table, run = described(TABLE_FIELDS), described(RUN_FIELDS_OF.get(asset, RUN_FIELDS))
    groups = table + ([("this run: " if table else "") + ", ".join(run)] if run else [])
    return f"  done: {asset}" + (f" ({'; '.join(groups)})" if groups else "")


def _materialize(
    settings: Settings,
    scoring: bool,
    partition_key: str | None = None,
    min_free_mb: float = MIN_FREE_MB,
    training: dict | None = None,
) -> dict[str, dict]:
    """Materialize the daily assets (scoring and its report, for one partition) or every other asset.

    The console shows the assets' INFO lines (their progress) rather than
    Dagster's event stream, and one `done:` line per asset as soon as it is
    materialized (cli/console.py). Returns each materialized asset's metadata. A
    step that failed on an expected condition ends the command with its
    message and exit code (console.EXIT_CODES); any other failure prints its
    stack trace once and exits 1.
    """
    import dagster as dg

    from engagement_pipeline.cli.console import console_logger_def
    from engagement_pipeline.definitions import build_definitions
    from engagement_pipeline.ops.run_host import HOST_TAG, this_host
    from engagement_pipeline.ops.stalled_runs import fail_stalled_runs
    from engagement_pipeline.resources import resources_for

    materialized: dict[str, dict] = {}

    def done(asset: str, metadata: dict) -> None:
        materialized[asset] = metadata
        print(wrapped(summary_line(asset, metadata).strip(), "  ", "      "), flush=True)

    defs = build_definitions(resources_for(settings))
    daily = dg.AssetSelection.assets("user_predictions", "engagement_report")  # the day's file, then its report
    selection = daily if scoring else dg.AssetSelection.all() - daily
    job = defs.resolve_implicit_global_asset_job_def().with_logger_defs({"console": console_logger_def(done)})
    with open_dagster_instance(settings) as instance:
        for run_id in fail_stalled_runs(instance):
            print(f"  marked run {run_id} failed: its process is gone", flush=True)
        result = job.execute_in_process(
            instance=instance,
            asset_selection=list(selection.resolve(defs.resolve_asset_graph())),
            partition_key=partition_key,
            tags={HOST_TAG: this_host()},
            run_config={"loggers": {"console": {}}}
            | ({"ops": {"engagement_model": {"config": training}}} if training else {}),
            raise_on_error=False,
        )
    if not result.success:
        raise_run_failure(settings, result, min_free_mb)
    return materialized


def raise_run_failure(settings: Settings, result, min_free_mb: float) -> None:
    """End the command for a failed run: the first failed step's cause, its stack trace only if it is a bug."""
    failures = [(event.step_key, event.step_failure_data.error) for event in result.all_events if event.is_step_failure]
    if not failures:
        raise CommandFailed(BUG, f"Run {result.run_id} failed (no step failed: see it in `engagement dagster-ui`).")
    step, error = failures[0]
    code, message, stack = classify_failure(step, error)
    if code == DISK_FULL or says_disk_full(message, state_folders(settings), min_free_mb):
        raise disk_full_exit(settings, min_free_mb, f"run {result.run_id} failed in {step}: {message}")
    if code != BUG:
        raise CommandFailed(code, f"{step}: {message}")
    raise CommandFailed(
        BUG,
        f"{step} failed with an unexpected error (a bug; run {result.run_id} in `engagement dagster-ui` has the "
        f"full log):\n{stack}{message}",
    )


def cmd_run(args) -> int:
    # the demo is the bundled sample, whatever the shell says
    if args.command == "run":
        check_exports_option(Path(args.exports))
    settings = args.settings.with_exports(None if args.command == "demo" else Path(args.exports))
    print(f"ENGAGEMENT_HOME={settings.home}")
    if args.command == "run":
        print_up_front_estimate(Path(args.exports), args.train)
    print("1/3 ingest, SQL models and training (every unpartitioned asset) ...", flush=True)
    materialized = _materialize(settings, scoring=False, min_free_mb=args.min_free_mb, training=args.train)
    unpromoted = not_promoted_lines(settings, materialized.get("engagement_model"))
    if unpromoted:
        for line in unpromoted:
            print(wrapped(line, "", "  "), flush=True)
        return 0
    days = latest_complete_days(settings, args.score_days)
    for i, day in enumerate(days, 1):
        print(f"2/3 scoring {day} ({i}/{len(days)}) ...", flush=True)
        _materialize(settings, scoring=True, partition_key=day, min_free_mb=args.min_free_mb)
    print(f"3/3 done. Predictions: {settings.home / 'predictions'}; reports: {settings.home / 'reports'}")
    print("Next: `engagement dagster-ui` and `engagement mlflow-ui` to look around.")
    return 0


def training_overrides(pairs: list[str], error) -> dict:
    """`--train KEY=VALUE` pairs -> engagement_model's run config, checked against TrainingConfig."""
    from pydantic import ValidationError

    from engagement_pipeline.model.training import TrainingConfig

    overrides = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or key not in TrainingConfig.model_fields:
            error(f"--train {pair}: expected KEY=VALUE with KEY one of {', '.join(TrainingConfig.model_fields)}")
        overrides[key] = None if value.lower() in ("null", "none") else value
    try:
        return TrainingConfig(**overrides).model_dump(include=set(overrides))
    except ValidationError as invalid:
        error(f"--train: {invalid.errors()[0]['loc'][0]}: {invalid.errors()[0]['msg']}")


def print_up_front_estimate(exports: Path, training: dict) -> None:
    """For a large export: its size and the LSTM's training time at these settings, before anything starts."""
    from engagement_pipeline.ingest.files import find_exports
    from engagement_pipeline.model.budget import up_front_estimate
    from engagement_pipeline.model.training import TrainingConfig

    files = find_exports(exports) if exports.is_dir() else []
    words = up_front_estimate(files, TrainingConfig(**training)) if files else ""
    if words:
        print(wrapped(f"estimate: {words}", "", "  "), flush=True)


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


def cmd_score(args) -> int:
    settings = args.settings
    args.days = scorable_days(settings, args.days)
    for i, day in enumerate(args.days, 1):
        print(f"scoring {day} ({i}/{len(args.days)}) ...", flush=True)
        _materialize(settings, scoring=True, partition_key=day.isoformat(), min_free_mb=args.min_free_mb)
    print(f"Predictions: {settings.home / 'predictions'}")
    return 0


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
        sub.add_argument(
            "--train",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="engagement_model run config for this run, e.g. --train max_train_examples=500000 --train epochs=3",
        )
        add_min_free_option(sub)
        sub.set_defaults(func=cmd_run, usage_error=sub.error)

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
    """The `engagement` command. Run as the script (argv None), an expected condition prints its message
    and returns its exit code (console.EXIT_CODES); called with argv (tests), it raises CommandFailed."""
    if argv is not None:
        return run_command(argv)
    try:
        return run_command(argv)
    except CommandFailed as failed:
        if failed.exit_code == BUG:  # a stack trace keeps its own lines
            print(failed.code, file=sys.stderr, flush=True)
        else:
            say(str(failed.code), file=sys.stderr)
        return failed.exit_code


def run_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.settings = Settings.from_environment()
    silence_library_noise()
    check_home(args.settings)
    os.umask(0o077)  # what this command and its children create (sqlite stores, runs, reports) is the owner's alone
    if args.command in ("demo", "run"):
        args.train = training_overrides(args.train, args.usage_error)
    if args.command == "score":
        try:
            args.days = days_to_score(args.date, args.start, args.end)
        except ValueError as error:
            args.usage_error(str(error))  # exits 2 with the usage line
    if args.command not in ("demo", "run", "score"):
        return args.func(args)
    # Before anything is created: a run on a full disk fails in sqlite or DuckDB at some arbitrary point.
    try:
        require_free_space(state_folders(args.settings), args.min_free_mb)
    except CommandFailed:
        raise
    except SystemExit as refused:
        raise CommandFailed(DISK_FULL, str(refused.code)) from None
    try:
        return args.func(args)
    except CommandFailed:
        raise
    except Exception as error:  # the disk filled up during the run (Dagster's own sqlite storage, say)
        cause = f"{type(error).__name__}: {error}"
        if is_disk_full(error) or says_disk_full(cause, state_folders(args.settings), args.min_free_mb):
            raise disk_full_exit(args.settings, args.min_free_mb, cause) from None
        raise
