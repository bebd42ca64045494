"""A month of nights on a real deployment: `engagement deploy up`, then N nights of full-snapshot exports.

    .venv/bin/python benchmarks/soak.py                       # the month: 30 nights, the last 10 replay Talk
    .venv/bin/python benchmarks/soak.py --nights 4 --talk-nights 2 --rows-per-day 800

One generated export (benchmarks/out/soak/all.csv) is cut into nightly full snapshots: night k's file holds
every row before the end of day k, as Zooniverse's exports do, and the folder keeps every earlier night's file.
The last --talk-nights nights replay a slice of the real Talk export (../shared/data/real, its last
--talk-days days of comments) day by day the same way, in files of their own beside the generated ones: its
times moved by a whole number of weeks so that its replayed days follow the generated ones (hour and weekday
kept), its classification ids moved past the generated ones (the Talk file numbers its lines from 1).
Each night runs, against the deployment's Dagster instance (PostgreSQL) and MLflow server, what the daemon
runs: `refresh_warehouse`, then `nightly_score_and_report` for the night's day (only after a successful
refresh). A model is trained on night 1 and every 7th night and the promotion gate decides, as in
production: a retrain that is not promoted leaves the champion scoring. Faults on stated nights (--faults,
default "3:mlflow-down-scoring,5:bad-export,24:mlflow-down-scoring"):

    mlflow-down-scoring  the MLflow server is stopped before scoring: the scoring run must fail, naming the
                         server; `deploy up` starts it again and the retried scoring must succeed
    bad-export           a file with a foreign header lands in the folder: the refresh must fail and nothing
                         be scored; the file is removed and the night retried

Each night's row: wall time, the ingest's and SQL models' step seconds, rows stored, runs and outcomes,
whether the day's predictions and report exist and are right, the process's peak RSS so far (the runs
execute in it). "right": the predictions' (classifications that day, last classification time) per volunteer
equal, as a multiset, what DuckDB computes from the raw exports (volunteers keyed by user_id, else by
user_name, as the Talk export has no user_id; never linked to the pipeline's salted keys), and the report names
the day and the model version that scored it. At the end: lost or stale days, runs of the instance not in a
final state, unexpected outcomes (a run that failed, or one that should have failed and did not), and the 30th
night's ingest + SQL seconds over the 2nd night's. Exits 1 when any of the first three is not 0.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "soak"
TALK = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "serengeti-talk-panoptes.csv.gz"
UNFINISHED = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]


# Who a row belongs to and when, for the independent recomputation (the export's own columns, never the
# pipeline's salted keys): user_id when present, else user_name, as the contract keys volunteers.
HAPPENED = "strptime(created_at, '%Y-%m-%d %H:%M:%S UTC')::timestamp at time zone 'UTC' as happened"
IDENTITY = f"coalesce(nullif(user_id, ''), 'name:' || user_name) as volunteer, {HAPPENED}"


def replay_talk(con, talk: Path, after: str | None, nights: int, history_days: int, first_id: int) -> list[str]:
    """Table `talk`: the Talk export's last `history_days` days, its ids moved to start at `first_id` and its
    times by whole weeks so that its last `nights` days start 1 to 7 days after `after` (unmoved when None).
    Returns those days, moved."""
    con.execute("create table source as select * from read_csv(?, all_varchar = true)", [str(talk)])
    (last,) = con.execute("select max(left(created_at, 10))::date from source").fetchone()
    first = last - datetime.timedelta(days=nights - 1)
    gap = 0 if after is None else (datetime.date.fromisoformat(after) + datetime.timedelta(days=1) - first).days
    shift = 7 * -(-gap // 7)  # whole weeks: hours and weekdays kept
    con.execute(
        f"""create table talk as
        with slice as (
            select * replace (
                (classification_id::bigint + {first_id})::varchar as classification_id,
                strftime(strptime(created_at, '%Y-%m-%d %H:%M:%S UTC') + interval {shift} day,
                         '%Y-%m-%d %H:%M:%S UTC') as created_at
            )
            from source
            where left(created_at, 10)::date > ?::date - {history_days}
        )
        select *, 'name:' || user_name as volunteer, {HAPPENED}
        from slice""",
        [last],
    )
    con.execute("drop table source")
    return [str(first + datetime.timedelta(days=shift + i)) for i in range(nights)]


def engagement(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engagement_pipeline.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"engagement {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def check_day(con, home: Path, day: str, source: str) -> tuple[str, str]:
    """("right (N volunteers)" or what is wrong, "right" or what is wrong) for the day's predictions and report.

    The predictions' (n_classifications, last_classification_at) per row must equal, as a multiset, the same
    computed from the raw export rows of that day (`source`: raw or talk) per volunteer.
    """
    import duckdb

    path = home / "predictions" / f"date={day}" / "predictions.parquet"
    expected = con.execute(
        f"""select count(*) n, epoch_us(max(happened)) last from {source}
        where happened >= ?::date and happened < ?::date + 1 group by volunteer order by n, last""",
        [day, day],
    ).fetchall()
    if not path.exists():
        return f"MISSING ({len(expected)} volunteers active)", "not checked"
    got = duckdb.sql(
        f"""select n_classifications, epoch_us(last_classification_at) from '{path}'
        order by n_classifications, epoch_us(last_classification_at)"""
    ).fetchall()
    versions = duckdb.sql(f"select distinct model_name || ' v' || model_version::varchar from '{path}'").fetchall()
    predictions = (
        f"right ({len(got)} volunteer{'s' if len(got) != 1 else ''})"
        if got == expected
        else f"WRONG: {len(got)} rows, {len(expected)} expected"
    )
    report_path = home / "reports" / f"date={day}" / "report.html"
    if not report_path.exists():
        return predictions, "MISSING"
    text = report_path.read_text(encoding="utf-8")
    named = [v for (v,) in versions if re.search(rf"{re.escape(v)}(?!\d)", text)]
    report = (
        "right" if day in text and len(named) == len(versions) else f"WRONG: names {day}: {day in text}, {versions}"
    )
    return predictions, report


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
    parser.add_argument("--talk-nights", type=int, default=10, help="the last nights replay Talk (0: none)")
    parser.add_argument("--talk-days", type=int, default=120, help="days of Talk history in the slice")
    parser.add_argument("--talk", type=Path, default=TALK, help="the Talk export")
    parser.add_argument("--faults", default="3:mlflow-down-scoring,5:bad-export,24:mlflow-down-scoring")
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
    generated_nights = args.nights - args.talk_nights
    all_rows = OUT / "all.csv"
    write_export(all_rows, n_classifications=args.rows_per_day * (warmup + generated_nights), seed=11)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"create table raw as select *, {IDENTITY} from read_csv(?, all_varchar = true)", [str(all_rows)])
    days = [d for (d,) in con.execute("select distinct left(created_at, 10) d from raw order by d").fetchall()]
    if len(days) < warmup + generated_nights:
        raise SystemExit(f"the generated export spans {len(days)} days, fewer than {warmup + generated_nights}")
    days = days[len(days) - generated_nights :]
    if args.talk_nights:
        (past_generated,) = con.execute("select max(classification_id::bigint) + 1 from raw").fetchone()
        days += replay_talk(
            con, args.talk, days[-1] if days else None, args.talk_nights, args.talk_days, past_generated
        )

    def snapshot(night: int) -> tuple[str, Path]:
        day = days[night - 1]
        source, name = ("raw", "export") if night <= generated_nights else ("talk", "talk")
        target = exports / f"{name}-{day}.csv"
        con.execute(
            f"copy (select * exclude (volunteer, happened) from {source} where happened < ?::date + 1) to '{target}' (header)",
            [day],
        )
        return day, target

    try:
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
            import mlflow

            try:
                champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS).version
            except mlflow.exceptions.MlflowException:  # the gate has crowned no version yet
                return f"train ok (v{latest.version} not promoted, no champion)"
            verdict = "promoted" if champion == latest.version else f"not promoted, v{champion} stays"
            return f"train ok (v{latest.version} {verdict})"

        lost, unexpected, ingest_sql = 0, 0, {}
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
                result = refresh.execute_in_process(
                    instance=instance, tags={"engagement/night": day}, raise_on_error=False
                )
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
                predictions, report = check_day(con, home, day, "raw" if night <= generated_nights else "talk")
                lost += not predictions.startswith("right") or report != "right"
                unexpected += sum(
                    outcome.endswith(("FAILED", "?!")) or outcome == "refresh ok" and fault == "bad-export" and i == 0
                    for i, outcome in enumerate(runs)
                )
                ingest_sql[night] = seconds["ingest"] + seconds["sql"]
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                line = (f"| {night} | {day} | {time.monotonic() - start:.1f} | {seconds['ingest']:.1f} | {seconds['sql']:.1f} "
                        f"| {rows:,} | {'; '.join(runs)} | {predictions} | {report} | {rss:.0f} |")  # fmt: skip
                rows_out.append(line)
                print(line, flush=True)
            unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus[s] for s in UNFINISHED]))
        second, last = ingest_sql.get(2), ingest_sql.get(args.nights)
        ratio = f"{last / second:.2f}x ({last:.1f} s against {second:.1f} s)" if second and last else "n/a"
        summary = (
            f"{lost} lost or stale days, {len(unfinished)} runs not in a final state, {unexpected} unexpected "
            f"outcomes; ingest + SQL, night {args.nights} over night 2: {ratio}"
        )
        failed = bool(lost or unfinished or unexpected)
        rows_out += ["", summary]
        print(summary, flush=True)
        (OUT / "table.md").write_text("\n".join(rows_out) + "\n")
    finally:
        if not args.keep:
            print(engagement(env, "deploy", "down"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
