"""Online scoring benchmark: `engagement serve` over HTTP against a bare forward pass of the same model.

    .venv/bin/python benchmarks/bench_serving.py --rows 100000

1. A pipeline home in benchmarks/out/serving-<rows>/ (kept for the next run):
   a generated export of --rows classifications, ingested, the SQL models,
   a quickly trained champion (the default hidden size, one epoch) and the
   history snapshot.
2. The real server (`python -m engagement_pipeline.cli serve`) in its own
   process group on a free port, its DuckDB and torch on the same 2 cores as
   everything else.
3. Latency: --requests requests, each one volunteer's last (up to) 100
   classifications as raw export rows, one after another on a keep-alive
   connection, volunteers drawn at random (weighted by nothing: a volunteer
   with 3 rows counts as much as one with 5,000): p50, p99, max, and the
   server's CPU seconds per request (what an idle machine would wait for).
   The server's access log says which road the models took for each
   (`kept plan`: the plan its connection keeps; `planned`: planned for the
   request over the tables, for a request of many rows); the share is printed.
   With --baseline PATH (another checkout of the project), a second server
   runs that code on the same home and every request goes to both, in a
   random order: a before/after side by side under the same load.
4. Throughput, alternately and side by side: (a) POST of the export's last
   10,000 rows (many volunteers) to the server, end to end (JSON both ways,
   staging, history read, SQL models, windows, model); (b) the bare forward
   pass of the same champion (pyfunc predict, as the server calls it, batches
   of 8,192) over the windows of those same rows, prepared beforehand from
   the warehouse's `features`. Best of --repeats; target (b time)/(a time) >= 0.5.
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"


def build_home(home: Path, export: Path) -> None:
    import dagster as dg

    from engagement_pipeline.ingest.assets import ingest_assets
    from engagement_pipeline.model.assets import engagement_model
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.serving.history_snapshot import history_snapshot
    from engagement_pipeline.settings import Settings
    from engagement_pipeline.transform.sql_models import sql_model_assets
    from engagement_pipeline_tests.conftest import QUICK_TRAINING

    training = {**QUICK_TRAINING, "hidden_size": 32, "max_train_examples": 20_000}  # 32: the default model size
    result = dg.materialize(
        [*ingest_assets, *sql_model_assets(), engagement_model, history_snapshot],
        resources=resources_for(Settings.from_environment()),
        run_config={"ops": {"engagement_model": {"config": training}}},
    )
    assert result.success


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the project (e.g. `git worktree add /tmp/base main`): its server runs beside "
        "this tree's on the same home, requests alternate between them",
    )
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    home = OUT / f"serving-{args.rows}" / "home"
    exports = home.parent / "exports"
    os.environ["ENGAGEMENT_HOME"] = str(home)
    os.environ["ENGAGEMENT_EXPORTS_DIR"] = str(exports)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    export = exports / "export.csv"
    if args.build_only:
        from engagement_pipeline.sample import write_export

        exports.mkdir(parents=True, exist_ok=True)
        write_export(export, n_classifications=args.rows, seed=11)
        build_home(home, export)
        return
    if not (home / "serving" / "history.parquet").exists():
        # In a process of its own: training sets torch's thread count, which would skew (b) here.
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--build-only"], check=True)
        print(f"pipeline home {home} built in {time.perf_counter() - started:.0f}s", flush=True)

    import numpy as np

    from engagement_pipeline.model.registry import find_champion, load_model
    from engagement_pipeline.model.windows import gather_windows, load_feature_matrix
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.settings import Settings

    with open(export, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_user: dict[str, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"] or row["user_name"], []).append(row)
    users = sorted(by_user)

    import torch

    torch.set_num_threads(1)  # as the server runs it (serving.make_server)
    champion = load_model(find_champion(resources_for(Settings.from_environment())["tracking"]))
    batch = rows[-args.batch_rows :]
    with resources_for(Settings.from_environment())["warehouse"].connect() as con:
        matrix = load_feature_matrix(con)
    index = np.flatnonzero(np.isin(matrix.classification_id, [int(r["classification_id"]) for r in batch]))
    windows = [gather_windows(matrix, index[s : s + 8192], champion.window) for s in range(0, len(index), 8192)]
    print(f"{len(rows):,} classifications, {len(users):,} volunteers; champion v{champion.version} "
          f"(K={champion.window}, F={len(champion.feature_names)}); torch threads 1 on both sides")  # fmt: skip

    trees = [("this tree", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    servers = [Served(name, tree, home.parent / f"serve-{i}.log") for i, (name, tree) in enumerate(trees)]
    try:
        for served in servers:
            served.wait_ready()
        rng = random.Random(0)
        for _ in range(10):  # warm-up: every pooled connection, the model's first calls
            records = by_user[rng.choice(users)][-100:]
            for served in servers:
                served.post(records)
        sizes = []
        for served in servers:
            served.start_counting()
        for _ in range(args.requests):  # each request to every server, in a random order: the same load for all
            records = by_user[rng.choice(users)][-100:]
            sizes.append(len(records))
            for served in rng.sample(servers, len(servers)):
                served.latencies.append(served.post(records))
        print(f"latency, one volunteer's last <=100 rows (mean {np.mean(sizes):.0f} rows), {args.requests} requests"
              f"{' to each server, alternately' if len(servers) > 1 else ''}:")  # fmt: skip
        time.sleep(0.5)  # the access log lines of the last requests
        for served in servers:
            ms = np.array(served.latencies) * 1000
            cpu_per_request = (cpu_seconds(served.process.pid) - served.cpu_before) / args.requests
            roads = served.roads()
            print(f"  {served.name}: p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
                  f"max {ms.max():.1f} ms; server CPU {cpu_per_request * 1000:.1f} ms/request{roads}")  # fmt: skip
        print(f"  load average {os.getloadavg()[0]:.1f} (2 cores)")

        def bare() -> float:
            start = time.perf_counter()
            for chunk in windows:
                champion.model.predict(chunk)
            return time.perf_counter() - start

        forward = []
        for _ in range(args.repeats):
            for served in servers:
                served.served.append(served.post(batch))
            forward.append(bare())
        b = min(forward)
        n = len(batch)
        print(f"(b) bare forward pass, {n:,} rows' windows: best {b * 1000:.0f} ms = {n / b:,.0f} rows/s")
        for served in servers:
            a = min(served.served)
            print(f"(a) {served.name}, {n:,} rows end to end: best {a * 1000:.0f} ms = {n / a:,.0f} rows/s; "
                  f"throughput a/b = {b / a:.2f} (target >= 0.5)")  # fmt: skip
    finally:
        for served in servers:
            served.stop()


class Served:
    """`python -m engagement_pipeline.cli serve` from one tree of the project, in its own process group."""

    def __init__(self, name: str, tree: Path, log_path: Path):
        import requests

        from engagement_pipeline_tests.test_servers import free_port

        self.name, self.log_path = name, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engagement_pipeline.cli", "serve", "--port", str(self.port)],
            cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.http = requests.Session()
        self.http.trust_env = False
        self.latencies: list[float] = []
        self.served: list[float] = []

    def wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + 300
        while True:
            try:
                if self.http.get(f"{self.url}/ping", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the server ({self.name}) did not start: see {self.log_path}")
            time.sleep(0.5)

    def post(self, records) -> float:
        body = json.dumps({"dataframe_records": records})
        start = time.perf_counter()
        response = self.http.post(f"{self.url}/invocations", data=body, headers={"Content-Type": "application/json"})
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == len(records)
        return elapsed

    def start_counting(self) -> None:
        self.log.flush()
        self.log_start = self.log_path.stat().st_size
        self.cpu_before = cpu_seconds(self.process.pid)

    def roads(self) -> str:
        """Which road the models took for the counted requests, from the access log (when it says)."""
        with open(self.log_path, "rb") as handle:
            handle.seek(self.log_start)
            lines = [line for line in handle.read().decode().splitlines() if line.startswith("POST /invocations 200")]
        kept = sum("(kept plan)" in line for line in lines)
        planned = sum("(planned)" in line for line in lines)
        return f"; kept plan {kept}, planned {planned}" if kept + planned else ""

    def stop(self) -> None:
        from engagement_pipeline_tests.test_servers import stop_group

        stop_group(self.process)  # SIGTERM to the whole group, SIGKILL what is left; returns once none runs
        self.log.close()
        self.http.close()


if __name__ == "__main__":
    main()
