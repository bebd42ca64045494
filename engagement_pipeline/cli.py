"""The `engagement` command: the common jobs of the pipeline from a shell.

    engagement demo                 ingest the bundled sample, build the SQL models, train, score
    engagement run --exports DIR    the same on a folder of real Zooniverse exports
    engagement generate --rows N    write a sample export of any size
    engagement score --date D       score one day (or --start/--end for a range)
    engagement dagster-ui           the Dagster UI (webserver + daemon) on 127.0.0.1:3000
    engagement mlflow-ui            the MLflow UI against the project's store on 127.0.0.1:5000

Every command runs on the same Dagster instance ($DAGSTER_HOME, by default
$ENGAGEMENT_HOME/dagster), so what it does shows up in the Dagster UI.
"""

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

from engagement_pipeline.resources import paths, tracking_uri

DAGSTER_YAML = """\
# Written by `engagement`: one run at a time, because every run uses the one DuckDB file.
run_queue:
  max_concurrent_runs: 1
telemetry:
  enabled: false
"""


def prepare_dagster_home() -> Path:
    """Point DAGSTER_HOME at $ENGAGEMENT_HOME/dagster unless it is set, and give it a dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(paths().dagster_home))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def _materialize(scoring: bool, partition_key: str | None = None) -> None:
    """Materialize the scoring asset (for one partition) or every other asset, on the Dagster instance."""
    import dagster as dg

    from engagement_pipeline.definitions import defs

    predictions = dg.AssetSelection.assets("user_predictions")
    selection = predictions if scoring else dg.AssetSelection.all() - predictions
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=list(selection.resolve(defs.resolve_asset_graph())),
            partition_key=partition_key,
            raise_on_error=False,
        )
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        raise SystemExit(f"Run {result.run_id} failed in {failed}; see the run in the Dagster UI (engagement dagster-ui).")


def _days_to_score(days: int) -> list[str]:
    """The last `days` days that have classifications, newest last."""
    from engagement_pipeline.resources import Warehouse

    with Warehouse().connect() as con:
        rows = con.execute(
            "select distinct cast(created_at as date)::varchar as day from classifications order by day desc limit ?",
            [days],
        ).fetchall()
    return sorted(day for (day,) in rows)


def cmd_run(args) -> int:
    if args.exports:
        os.environ["ENGAGEMENT_EXPORTS_DIR"] = str(Path(args.exports).resolve())
    prepare_dagster_home()
    print(f"ENGAGEMENT_HOME={paths().home}")
    print("1/3 ingest, SQL models and training (every unpartitioned asset) ...", flush=True)
    _materialize(scoring=False)
    days = _days_to_score(args.score_days)
    for i, day in enumerate(days, 1):
        print(f"2/3 scoring {day} ({i}/{len(days)}) ...", flush=True)
        _materialize(scoring=True, partition_key=day)
    print(f"3/3 done. Predictions: {paths().predictions}")
    print("Next: `engagement dagster-ui` and `engagement mlflow-ui` to look around.")
    return 0


def cmd_generate(args) -> int:
    from engagement_pipeline.sample_export import main as generate_main

    argv = ["--rows", str(args.rows), "--seed", str(args.seed), "--out", str(args.out)]
    return generate_main(argv)


def _parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-06-30") from None


def cmd_score(args) -> int:
    prepare_dagster_home()
    start = args.date or args.start
    end = args.date or args.end or start
    if start is None:
        raise SystemExit("give --date D, or --start D [--end D]")
    if end < start:
        raise SystemExit(f"--end {end} is before --start {start}")
    day = start
    while day <= end:
        print(f"scoring {day} ...", flush=True)
        _materialize(scoring=True, partition_key=day.isoformat())
        day += dt.timedelta(days=1)
    return 0


def _exec(argv: list[str]) -> int:
    print("$ " + " ".join(argv), flush=True)
    return subprocess.call(argv)


def mlflow_ui_command(host: str, port: int) -> list[str]:
    """The MLflow UI against the project's tracking store and artifact folder."""
    command = [shutil.which("mlflow") or "mlflow", "server", "--backend-store-uri", tracking_uri(),
               "--host", host, "--port", str(port)]  # fmt: skip
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        paths().mlartifacts.mkdir(parents=True, exist_ok=True)
        command += ["--default-artifact-root", paths().mlartifacts.as_uri()]
    return command


def cmd_mlflow_ui(args) -> int:
    return _exec(mlflow_ui_command(args.host, args.port))


def cmd_dagster_ui(args) -> int:
    prepare_dagster_home()
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    command = [shutil.which("dagster") or "dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    return _exec(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engagement",
        description="Predict whether Zooniverse volunteers keep working 10, 20 and 30 minutes from now.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="State lives in $ENGAGEMENT_HOME (default ./.engagement). See README.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (
        ("demo", "run the whole pipeline on the bundled sample export"),
        ("run", "run the whole pipeline on a folder of exports (--exports)"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--exports", required=name == "run", help="folder of *.csv / *.csv.gz exports")
        sub.add_argument("--score-days", type=int, default=3, help="score the last N days that have data (default 3)")
        sub.set_defaults(func=cmd_run)

    sub = commands.add_parser("generate", help="write a realistic sample export of any size")
    sub.add_argument("--rows", type=int, default=150_000)
    sub.add_argument("--seed", type=int, default=7)
    sub.add_argument("--out", type=Path, required=True, help="file to write (.csv or .csv.gz)")
    sub.set_defaults(func=cmd_generate)

    sub = commands.add_parser("score", help="score one day (--date) or a range (--start, --end) with the champion")
    sub.add_argument("--date", type=_parse_day)
    sub.add_argument("--start", type=_parse_day)
    sub.add_argument("--end", type=_parse_day)
    sub.set_defaults(func=cmd_score)

    for name, port, func, help_text in (
        ("mlflow-ui", 5000, cmd_mlflow_ui, "the MLflow UI against the project's tracking store"),
        ("dagster-ui", 3000, cmd_dagster_ui, "the Dagster UI and daemon (runs the nightly schedule when it is on)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        sub.add_argument("--port", type=int, default=port)
        sub.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
