"""The whole pipeline at scale: `engagement generate --rows N`, then `engagement run --exports`, in a fresh home.

    .venv/bin/python benchmarks/bench_scale.py --rows 100000 1000000
    .venv/bin/python benchmarks/bench_scale.py                      # 1M, 4M, 10M (an hour or more on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --rows 10000000 --full   # 10M, then 38.5M (hours)
    .venv/bin/python benchmarks/bench_scale.py --rows 38500000 --gzip   # the export as .csv.gz (disk)
    .venv/bin/python benchmarks/bench_scale.py --rows 4000000 --train max_train_examples=null  # every row

Per size, in benchmarks/out/scale-N/ (ignored by git): the export is generated once
(`engagement generate`, timed), the home is made afresh, and `engagement run --exports
... --score-days 1` runs as a child process while a sampler reads its CPU time and
resident memory from /proc every half second. Stages are cut from the run's own
records: each Dagster step's start and end from the event log of $DAGSTER_HOME, and
inside `engagement_model` the LSTM (load, split, training, test predictions) up to its
"fitting baselines" line and the baselines up to `baselines_seconds` in the MLflow run;
the rest of that step is the evaluation (bootstrap), registry and plots. Each stage's
CPU-seconds and peak RSS come from the samples inside it. Then `engagement score` of the
last day in a fresh process (scoring one day + its report, as the nightly job does it).

Beside them, the bare bounds of the same work, each in a child process of its own
(wall, CPU and peak RSS from os.wait4): DuckDB's read_csv of the export into a DuckDB
file; the minimal sessionization (gap flag, running sum, session end) of the run's own
`classifications`; and a bare training loop (the same network on prebuilt random
batches of the real shape) scaled to the windows the run trained.

Results accumulate in benchmarks/out/scale-results.json, so sizes run on different days
print together, with the growth exponent of each stage between consecutive sizes
(log(t2/t1) / log(N2/N1): 1 = linear, 1.1 ~ N log N over these ranges). The machine's
load average is recorded with each size: on a shared machine compare CPU-seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
RESULTS = OUT / "scale-results.json"
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_ROWS = (1_000_000, 4_000_000, 10_000_000)
FULL_ROWS = 38_500_000
INGEST_STEPS = ("ingest_", "classifications_")  # the ingest asset and its checks
MODEL_STEP = "engagement_model"


# --------------------------------------------------------------------------- sampling a process tree


def tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc/<pid>/task/*/children."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                stack += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def cpu_and_rss(pids: list[int]) -> tuple[float, int]:
    """CPU-seconds (user + system, children reaped included) and resident bytes summed over `pids`."""
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += sum(int(value) for value in fields[11:15]) / TICK  # utime stime cutime cstime
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return cpu, rss


class Sampler(threading.Thread):
    """(time.time(), cpu_s, rss_bytes) of a process tree every `every` seconds until it ends."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []

    def run(self) -> None:
        while Path(f"/proc/{self.pid}").exists():
            cpu, rss = cpu_and_rss(tree(self.pid))
            if rss:
                self.samples.append((time.time(), cpu, rss))
            time.sleep(self.every)

    def between(self, start: float, end: float) -> dict:
        """CPU-seconds and peak RSS of the samples from `start` to `end` (epoch seconds)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        before = [s for s in self.samples if s[0] <= start][-1:] or inside[:1]
        after = [s for s in self.samples if s[0] >= end][:1] or inside[-1:]
        if not before or not after:
            return {"cpu_s": None, "peak_rss_mb": None}
        peak = max(s[2] for s in inside + before + after)
        return {"cpu_s": round(after[0][1] - before[0][1], 1), "peak_rss_mb": round(peak / 2**20)}


def timed_child(command: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run a command to its end; wall seconds, CPU-seconds and peak RSS of it and its children (os.wait4)."""
    started = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command[:4])} ... failed" + (f": see {log}" if log else ""))
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


# --------------------------------------------------------------------------- the run and its stages


def step_intervals(home: Path) -> tuple[list[dict], dict[str, float]]:
    """Every step of every run in the home's Dagster instance (start, end, name), and the first time each
    log line we cut at appeared ("fitting baselines")."""
    import dagster as dg

    steps, marks = [], {}
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for record in reversed(instance.get_run_records()):
            run = record.dagster_run
            started: dict[str, float] = {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None:
                    if entry.user_message.startswith("fitting baselines"):
                        marks.setdefault("fitting baselines", entry.timestamp)
                    continue
                if event.event_type_value == "STEP_START":
                    started[event.step_key] = entry.timestamp
                elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in started:
                    steps.append(
                        {
                            "step": event.step_key,
                            "partition": run.tags.get("dagster/partition"),
                            "start": started[event.step_key],
                            "end": entry.timestamp,
                        }
                    )
    return steps, marks


def seconds(run, key: str) -> float | None:
    """A run's logged seconds: a tag (this version), else a metric (runs logged before issue 22)."""
    value = run.data.tags.get(key, run.data.metrics.get(key))
    return None if value is None else float(value)


def mlflow_figures(home: Path) -> dict:
    """The training run's own figures: baselines_seconds, examples per epoch, epochs run."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time DESC"]
    )
    if not runs:
        return {}
    run = runs[0]
    epochs = len(client.get_metric_history(run.info.run_id, "val_loss")) - 1
    return {
        # tags since issue 22 (seconds vary with load, so they are not metrics); metrics in older runs
        "baselines_seconds": seconds(run, "baselines_seconds"),
        "lstm_training_seconds": seconds(run, "lstm_training_seconds"),
        "train_examples_per_epoch": int(run.data.params.get("train_examples_per_epoch", 0)),
        "n_train": int(run.data.params.get("n_train", 0)),
        "n_features": int(run.data.params.get("n_features", 0)),
        "epochs_run": epochs,
        "window": int(run.data.params.get("window", 20)),
        "batch_size": int(run.data.params.get("batch_size", 256)),
        "test_roc_auc": {
            k: round(v, 4)
            for k, v in run.data.metrics.items()
            if re.fullmatch(r"test_roc_auc_\d+m(_ci_low|_ci_high)?", k)
        },
    }


def stages(steps: list[dict], marks: dict, figures: dict, sampler: Sampler) -> dict[str, dict]:
    """Per stage: seconds, CPU-seconds, peak RSS. The SQL models are every step that is neither the ingest,
    the model nor the day's scoring; the model's step is cut into LSTM, baselines and the rest."""
    unpartitioned = [s for s in steps if s["partition"] is None]
    daily = [s for s in steps if s["partition"] is not None]
    groups: dict[str, list[tuple[float, float]]] = {}
    for s in unpartitioned:
        if s["step"].startswith(INGEST_STEPS):
            name = "ingest + checks"
        elif s["step"] == MODEL_STEP:
            name = None
            fit = marks.get("fitting baselines", s["end"])
            after_baselines = min(s["end"], fit + (figures.get("baselines_seconds") or 0))
            groups.setdefault("LSTM (load, train, predict)", []).append((s["start"], fit))
            groups.setdefault("baselines", []).append((fit, after_baselines))
            groups.setdefault("evaluation, registry, plots", []).append((after_baselines, s["end"]))
        elif s["step"] == "history_snapshot":
            name = "history snapshot (serving)"
        else:
            name = "SQL models + checks"
        if name:
            groups.setdefault(name, []).append((s["start"], s["end"]))
    if daily:
        groups["scoring one day + report (in the run)"] = [(s["start"], s["end"]) for s in daily]
    out = {}
    for name, spans in groups.items():
        start, end = min(a for a, _ in spans), max(b for _, b in spans)
        busy = sum(b - a for a, b in spans)  # steps run one at a time: the sum is the stage's wall time
        out[name] = {"seconds": round(busy, 1)} | sampler.between(start, end)
    return out


def run_pipeline(rows: int, folder: Path, gzip: bool = False, train: tuple[str, ...] = ()) -> dict:
    """Generate (once), run in a fresh home, score one day again; every figure of this size."""
    exports, home = folder / "exports", folder / "home"
    export = exports / ("export.csv.gz" if gzip else "export.csv")
    result: dict = {"rows": rows, "train": list(train), "loadavg_before": os.getloadavg()[0]}
    if not export.exists():
        exports.mkdir(parents=True, exist_ok=True)
        command = [str(BIN / "engagement"), "generate", "--rows", str(rows), "--out", str(export)]
        result["generate"] = timed_child(command)
    result["export_mb"] = round(export.stat().st_size / 1e6)
    if home.exists():
        shutil.rmtree(home)
    env = os.environ | {"ENGAGEMENT_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = folder / "run.log"
    print(f"[{rows:,}] engagement run (log: {log}) ...", flush=True)
    started = time.time()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "engagement"), "run", "--exports", str(exports), "--score-days", "1"]
            + [f"--train={pair}" for pair in train],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        sampler = Sampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        sampler.join(timeout=2)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"engagement run failed at {rows:,} rows: see {log}")
    result["whole run"] = {
        "seconds": round(time.time() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }
    steps, marks = step_intervals(home)
    figures = mlflow_figures(home)
    result["stages"] = stages(steps, marks, figures, sampler)
    result["model"] = figures
    result["estimate_line"] = next((line for line in log.read_text().splitlines() if "estimate:" in line), "")
    day = max((s["partition"] for s in steps if s["partition"]), default=None)
    if day:
        command = [str(BIN / "engagement"), "score", "--date", day]
        result["score one day + report (own process)"] = timed_child(command, env, folder / "score.log")
    result["home_mb"] = {part.name: round(du(part) / 1e6) for part in sorted(home.iterdir()) if du(part) > 1e6} | {
        "total": round(du(home) / 1e6)
    }
    result["bare"] = bare_bounds(export, home, figures, folder)
    result["loadavg_after"] = os.getloadavg()[0]
    return result


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the bare bounds

READ_CSV = """
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute("SET memory_limit = '4GB'")
con.execute("create table raw as select * from read_csv(?, all_varchar = true)", [sys.argv[1]])
"""

SESSIONIZE = """
import duckdb, sys
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET memory_limit = '4GB'")
con.execute('''
    select count(*), count(distinct session_number) from (
        select sum(starts::integer) over (partition by user_key order by created_at, classification_id
                                          rows between unbounded preceding and current row) as session_number
        from (
            select classification_id, user_key, created_at,
                   coalesce(created_at - lag(created_at) over (partition by user_key order by created_at,
                            classification_id) >= interval 30 minute, true) as starts
            from classifications
        )
    )
''').fetchall()
"""

BARE_LOOP = """
import sys, time, torch
from engagement_pipeline.model.lstm import EngagementLSTM, Scaling, train_step
import numpy as np
torch.set_num_threads(1)
window, features, batch, windows = map(int, sys.argv[1:5])
scaling = Scaling(np.zeros(features, bool), np.zeros(features, np.float32), np.ones(features, np.float32))
model = EngagementLSTM(features, 3, scaling, 32, 2, 0.3).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(batch, window, features), (torch.rand(batch, 3) < 0.5).float()
steps = 60
for step in range(steps + 5):
    if step == 5:
        started = time.process_time()
    train_step(model, optimizer, x, y)
print((time.process_time() - started) / (steps * batch) * windows)
"""


def bare_bounds(export: Path, home: Path, figures: dict, folder: Path) -> dict:
    python = sys.executable
    scratch = folder / "bare.duckdb"
    scratch.unlink(missing_ok=True)
    out = {"read_csv of the export": timed_child([python, "-c", READ_CSV, str(export), str(scratch)])}
    scratch.unlink(missing_ok=True)
    out["minimal sessionization"] = timed_child([python, "-c", SESSIONIZE, str(home / "warehouse.duckdb")])
    if figures.get("n_features"):
        windows = figures["train_examples_per_epoch"] * max(figures["epochs_run"], 1)
        args = [str(figures["window"]), str(figures["n_features"]), str(figures["batch_size"]), str(windows)]
        seconds = float(subprocess.run([python, "-c", BARE_LOOP, *args], check=True, capture_output=True,
                                       text=True, cwd=ROOT).stdout.split()[-1])  # fmt: skip
        out["bare training loop (CPU-s for the run's windows)"] = {"cpu_s": round(seconds, 1), "windows": windows}
    return out


# --------------------------------------------------------------------------- loading the dataset: before / after

LOAD = """
import json, resource, sys, time, duckdb, numpy as np
from engagement_pipeline.model import training, windows
from engagement_pipeline.model.budget import scaling_rows
from engagement_pipeline.model.lstm import fit_scaling
how, database = sys.argv[1], sys.argv[2]
def peak_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
imported = peak_mb()
started = time.perf_counter()
con = duckdb.connect(database, read_only=True)
con.execute("SET TimeZone = 'UTC'")
con.execute("SET memory_limit = '4GB'")  # the warehouse resource's default
con.execute("SET enable_progress_bar = false")
if how == "before":  # the code before issue 27: one Arrow table, then copies; every row's key; [N, H] temporaries
    names = windows.feature_names(con)
    matrix = windows.matrix_from_arrow(con.sql(windows.ordered_features_sql(names)).to_arrow_table(), names)
    horizons, labels = training.load_labels(con, matrix.classification_id)
    con.close()
    loaded = peak_mb()
    created = matrix.created_at
    q = np.quantile(created[~np.isnan(labels).all(axis=1)], [0.70, 0.85]).astype(np.int64)
    reaches = created[:, None] + 2 * np.asarray(horizons, dtype=np.int64) * 60_000_000
    purge = ((created < q[0])[:, None] & (reaches > q[0])) | (((created >= q[0]) & (created < q[1]))[:, None] & (reaches > q[1]))
    labels = np.where(purge, np.nan, labels).astype(np.float32)
    train = np.flatnonzero((created < q[0]) & ~np.isnan(labels).all(axis=1))
    fit_scaling(matrix.X[train])
else:
    data = training.load_dataset(con)
    con.close()
    loaded = peak_mb()
    split = training.time_split(data.matrix.created_at, data.labels, data.horizons, 0.70, 0.15)
    fit_scaling(data.matrix.X[scaling_rows(split.train, 0)])
    matrix = data.matrix
n = len(matrix)
figures = {"rows": n, "seconds": round(time.perf_counter() - started, 1), "after_imports_mb": imported,
           "peak_after_load_mb": loaded, "load_mb_per_million_rows": round((loaded - imported) / n * 1e6),
           "peak_after_split_and_scaling_mb": peak_mb()}
if how == "after":  # what the asset does next: the drift reference of every training row (monitoring/drift.py)
    from engagement_pipeline.monitoring.drift import drift_reference_for
    drift_reference_for(matrix, split.train, split.val_start_us)
    figures["peak_with_drift_reference_mb"] = peak_mb()
print(json.dumps(figures))
"""


def load_memory(database: Path, rows: int | None) -> None:
    """Peak RSS of loading, splitting and scaling the dataset, the old way and the new, each in a fresh process;
    with `rows`, on a copy of `features`/`labels` restricted to a random ~rows-sized share of the volunteers."""
    python = sys.executable
    if rows:
        import duckdb

        subset = database.with_name(f"load-{rows}.duckdb")
        subset.unlink(missing_ok=True)
        with duckdb.connect(str(subset)) as con:
            con.execute(f"attach '{database}' as src (read_only)")
            [(total,)] = con.execute("select count(*) from src.features").fetchall()
            share = min(1.0, rows / total)
            con.execute(
                "create table features as select * from src.features where hash(user_key || 'share') % 1000 < ?",
                [int(share * 1000)],
            )
            con.execute("create table labels as select * from src.labels where classification_id in "
                        "(select classification_id from features)")  # fmt: skip
        database = subset
    for how in ("before", "after", "before", "after"):
        output = subprocess.run([python, "-c", LOAD, how, str(database)], check=True, capture_output=True,
                                text=True, cwd=ROOT).stdout  # fmt: skip
        print(how, output.strip(), flush=True)


BASELINES = """
import resource, sys, time
import duckdb
from engagement_pipeline.model.assets import fit_all_baselines, split_dataset
from engagement_pipeline.model.budget import scaling_rows
from engagement_pipeline.model.lstm import fit_scaling
from engagement_pipeline.model.training import TrainingConfig, load_dataset

started = time.perf_counter()
say = lambda message: print(f"{time.perf_counter() - started:7.1f}s {message}", flush=True)
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET TimeZone = 'UTC'")
data = load_dataset(con)
con.close()
config = TrainingConfig()
split, _ = split_dataset(data, config, say)
scaling = fit_scaling(data.matrix.X[scaling_rows(split.train, config.seed)])
cpu, wall = time.process_time(), time.perf_counter()
fitted = fit_all_baselines(data, split, scaling, config, say)
say(f"baselines: {time.perf_counter() - wall:.0f} s, {time.process_time() - cpu:.0f} CPU-s, peak RSS "
    f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB; chosen {fitted.chosen}")
"""


def baselines_alone(database: Path) -> None:
    """The baselines on a built warehouse as the training asset fits them (load, split, scaling, then
    fit_all_baselines at the default config), in a fresh process: their seconds, CPU-seconds and peak RSS."""
    subprocess.run([sys.executable, "-c", BASELINES, str(database)], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- the table


def exponent(a: float | None, b: float | None, n1: int, n2: int) -> str:
    if not a or not b or a <= 0 or b <= 0 or n1 == n2:
        return ""
    return f"{math.log(b / a) / math.log(n2 / n1):.2f}"


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per stage, per size seconds / CPU-s / peak RSS, then the exponents (CPU-s)."""
    sizes = sorted(results.values(), key=lambda r: r["rows"])
    names: list[str] = []
    for r in sizes:
        for name in ["whole run", *r["stages"], "score one day + report (own process)", *r["bare"]]:
            if name not in names:
                names.append(name)

    def cell(r: dict, name: str) -> dict:
        return r.get(name) or r["stages"].get(name) or r["bare"].get(name) or {}

    head = ["stage"] + [f"{r['rows']:,}{' ' + ' '.join(r.get('train', [])) if r.get('train') else ''}: s / CPU-s / MB"
                        for r in sizes]  # fmt: skip
    head += [f"exp. {a['rows'] / 1e6:g}M->{b['rows'] / 1e6:g}M (CPU)" for a, b in zip(sizes, sizes[1:])]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in names:
        row = [name]
        for r in sizes:
            c = cell(r, name)
            row.append(" / ".join("" if c.get(k) is None else f"{c[k]:,}" for k in ("seconds", "cpu_s", "peak_rss_mb")))
        for a, b in zip(sizes, sizes[1:]):
            row.append(exponent(cell(a, name).get("cpu_s"), cell(b, name).get("cpu_s"), a["rows"], b["rows"]))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for r in sizes:
        lines.append(
            f"- {r['rows']:,}: load average {r['loadavg_before']:.1f} before, {r['loadavg_after']:.1f} after; "
            f"export {r['export_mb']:,} MB; home {r['home_mb']}; model {r['model']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), help="sizes (default 1M 4M 10M)")
    parser.add_argument("--full", action="store_true", help="add 38,500,000 rows (hours)")
    parser.add_argument(
        "--gzip", action="store_true", help="generate the export as .csv.gz (38.5M rows: ~37 GB as plain CSV)"
    )
    parser.add_argument(
        "--train", action="append", default=[], metavar="KEY=VALUE",
        help="engagement_model run config for these runs, e.g. --train max_train_examples=null (every row)",
    )  # fmt: skip
    parser.add_argument("--table", action="store_true", help="print the table of the results so far and stop")
    parser.add_argument("--load-memory", type=Path, metavar="WAREHOUSE", help="measure loading the dataset only")
    parser.add_argument("--load-rows", type=int, help="with --load-memory: on about this many rows of it")
    parser.add_argument("--baselines", type=Path, metavar="WAREHOUSE", help="measure the baselines alone on it")
    args = parser.parse_args(argv)
    if args.baselines:
        baselines_alone(args.baselines)
        return 0
    if args.load_memory:
        load_memory(args.load_memory, args.load_rows)
        return 0
    OUT.mkdir(exist_ok=True)
    if not args.table:
        for rows in sorted(set(args.rows + ([FULL_ROWS] if args.full else []))):
            key = " ".join([str(rows), *args.train])
            result = run_pipeline(rows, OUT / f"scale-{rows}", args.gzip, tuple(args.train))
            # read again just before writing: another size may have finished meanwhile in another process
            results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            results[key] = result
            RESULTS.write_text(json.dumps(results, indent=2))
            print(json.dumps(result), flush=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
