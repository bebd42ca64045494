"""A month of nights on a real deployment: `engagement deploy up`, then N nights of full-snapshot exports.

    .venv/bin/python benchmarks/soak.py --nights 30           # the month (about 1 min a night on 2 cores)
    .venv/bin/python benchmarks/soak.py --nights 4 --rows-per-day 800

One generated export (benchmarks/out/soak/all.csv) is cut into nightly full snapshots: night k's file holds
every row before the end of day k, as Zooniverse's exports do, and the folder keeps every earlier night's file.
Each night runs, against the deployment's Dagster instance (PostgreSQL) and MLflow server, what the daemon
runs: `refresh_warehouse`, then `nightly_score_and_report` for the night's day (only after a successful
refresh). A champion is trained before night 1 and retrained every 7th night (crowned without the promotion
gate: the point is the plumbing). Faults on stated nights (--faults, default "3:mlflow-down-scoring,5:bad-export"):

    mlflow-down-scoring  the MLflow server is stopped before scoring: the scoring run must fail, naming the
                         server; `deploy up` starts it again and the retried scoring must succeed
    bad-export           a file with a foreign header lands in the folder: the refresh must fail and nothing
                         be scored; the file is removed and the night retried

Each night's row: wall time, the ingest's and SQL models' step seconds, rows stored, runs and outcomes,
whether the day's predictions and report exist and are right (one row per volunteer active that day,
counted independently with DuckDB from the night's raw export), the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "soak"


def engagement(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engagement_pipeline.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"engagement {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def step_seconds(result) -> dict[str, float]:
    """Seconds per kind of step of a run: ingest, sql, other."""
    seconds = {"ingest": 0.0, "sql": 0.0, "other": 0.0}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":
            kind = "ingest" if event.step_key.startswith("ingest") else "other"
            if event.step_key not in ("history_snapshot",) and kind == "other":
                kind = "sql"
            seconds[kind] += event.event_specific_data.duration_ms / 1000
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=1_500)
    parser.add_argument("--faults", default="3:mlflow-down-scoring,5:bad-export")
    parser.add_argument("--keep", action="store_true", help="leave the deployment running at the end")
    args = parser.parse_args(argv)
    faults = dict(item.split(":") for item in args.faults.split(",") if item)
    faults = {int(night): kind for night, kind in faults.items()}

    shutil.rmtree(OUT, ignore_errors=True)
    home, exports = OUT / "home", OUT / "exports"
    exports.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ENGAGEMENT_EXPORTS_DIR")}
    env.update(
        ENGAGEMENT_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        ENGAGEMENT_EXPORTS_DIR=str(exports),
        ENGAGEMENT_NIGHTLY_CRON="0 0 1 1 *",  # the soak drives the nights itself, on simulated days
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        OMP_NUM_THREADS="1",
    )
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import duckdb

    from engagement_pipeline.sample import write_export

    warmup = 21  # days of history before night 1, so the first model has something to learn
    all_rows = OUT / "all.csv"
    write_export(all_rows, n_classifications=args.rows_per_day * (warmup + args.nights), seed=11)
    con = duckdb.connect()
    con.execute("create table raw as select * from read_csv(?, all_varchar = true)", [str(all_rows)])
    days = [d for (d,) in con.execute("select distinct left(created_at, 10) d from raw order by d").fetchall()]
    if len(days) < warmup + args.nights:
        raise SystemExit(f"the generated export spans {len(days)} days, fewer than {warmup + args.nights}")
    first_night = len(days) - args.nights

    def snapshot(night: int) -> tuple[str, Path]:
        day = days[first_night + night - 1]
        target = exports / f"export-{day}.csv"
        con.execute(
            f"copy (select * from raw where created_at < '{day}T' or left(created_at, 10) <= '{day}') to '{target}' (header)"
        )  # noqa: E501
        return day, target

    t0 = time.monotonic()
    print(engagement(env, "deploy", "up"), flush=True)
    print(f"deploy up: {time.monotonic() - t0:.0f}s", flush=True)

    import dagster as dg

    from engagement_pipeline.definitions import build_definitions
    from engagement_pipeline.resources import CHAMPION_ALIAS, resources_for
    from engagement_pipeline.settings import Settings

    settings = Settings.from_environment()
    defs = build_definitions(resources_for(settings))
    refresh = defs.resolve_job_def("refresh_warehouse")
    nightly = defs.resolve_job_def("nightly_score_and_report")
    quick = {"epochs": 1, "patience": 1, "max_train_examples": 4_000, "max_val_examples": 2_000,
             "max_wide_examples": 5_000, "forest_max_train_rows": 2_000, "hidden_size": 8,
             "baseline_max_candidates": 1, "bootstrap_resamples": 50}  # fmt: skip

    def retrain(instance) -> str:
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("engagement_model")],
            run_config={"ops": {"engagement_model": {"config": quick}}},
            raise_on_error=False,
        )
        if not result.success:
            return "train FAILED"
        tracking = resources_for(settings)["tracking"]
        client = tracking.client()
        name = tracking.registered_model_name
        latest = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
        client.set_registered_model_alias(name, CHAMPION_ALIAS, latest.version)
        return "train ok"

    header = "| night | day | wall s | ingest s | SQL s | rows | runs | predictions | report | peak RSS MB |"
    rows_out = [header, "| --- " * 10 + "|"]
    print(header, flush=True)
    with dg.DagsterInstance.from_config(str(settings.dagster_instance_home)) as instance:
        for night in range(1, args.nights + 1):
            start = time.monotonic()
            day, _ = snapshot(night)
            runs, fault = [], faults.get(night)
            if fault == "bad-export":
                bad = exports / "foreign.csv"
                bad.write_text("not,an,export\n1,2,3\n")
                result = refresh.execute_in_process(
                    instance=instance, tags={"engagement/night": day}, raise_on_error=False
                )
                runs.append("refresh " + ("ok" if result.success else "FAILED (bad export, expected)"))
                bad.unlink()
            result = refresh.execute_in_process(instance=instance, tags={"engagement/night": day}, raise_on_error=False)
            seconds = step_seconds(result)
            runs.append("refresh " + ("ok" if result.success else "FAILED"))
            if result.success and (night == 1 or night % 7 == 0):
                runs.append(retrain(instance))
            if result.success:
                if fault == "mlflow-down-scoring":
                    from engagement_pipeline.deploy import services
                    from engagement_pipeline.deploy.command import Layout

                    services.stop(services.load(Layout(settings).state)["mlflow"])
                    down = nightly.execute_in_process(instance=instance, partition_key=day, raise_on_error=False)
                    runs.append("score " + ("ok?!" if down.success else "FAILED (MLflow down, expected)"))
                    engagement(env, "deploy", "up")
                scored = nightly.execute_in_process(instance=instance, partition_key=day, raise_on_error=False)
                runs.append("score+report " + ("ok" if scored.success else "FAILED"))
            stored = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
            (rows,) = stored.execute("select count(*) from classifications").fetchone()
            stored.close()
            predictions = home / "predictions" / f"date={day}" / "predictions.parquet"
            expected = con.execute(
                "select count(distinct user_name) from raw where left(created_at, 10) = ?", [day]
            ).fetchone()[0]  # noqa: E501
            got = duckdb.sql(f"select count(*) from '{predictions}'").fetchall()[0][0] if predictions.exists() else None
            right = "missing" if got is None else ("right" if got == expected else f"WRONG {got} vs {expected}")
            report = home / "reports" / f"date={day}" / "report.html"
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            line = (f"| {night} | {day} | {time.monotonic() - start:.1f} | {seconds['ingest']:.1f} | {seconds['sql']:.1f} "
                    f"| {rows:,} | {'; '.join(runs)} | {right} ({expected} users) | {'exists' if report.exists() else 'MISSING'} "
                    f"| {rss:.0f} |")  # fmt: skip
            rows_out.append(line)
            print(line, flush=True)
    (OUT / "table.md").write_text("\n".join(rows_out) + "\n")
    if not args.keep:
        print(engagement(env, "deploy", "down"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
