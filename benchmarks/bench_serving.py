"""Online scoring under load: `engagement serve` against today's server and against the bare work.

    git -C /work/main worktree add --detach /tmp/serve-before ced8233   # the server before issue 24
    .venv/bin/python benchmarks/bench_serving.py --rows 100000 --baseline /tmp/serve-before

1. A pipeline home in benchmarks/out/serving-<rows>/ (kept for the next run):
   a generated export of --rows classifications, ingested, the SQL models,
   a quickly trained champion (the default hidden size, one epoch) and the
   history snapshot.
2. The real server (`python -m engagement_pipeline.cli serve`) of this tree
   and, with --baseline PATH, of another checkout, each in its own process
   group on a free loopback port, on the same home and the same 2 cores.
   Every phase runs against each server in turn, with the same requests.
   A request is one volunteer's last (up to) 100 classifications as raw
   export rows, volunteers drawn at random with a fixed seed.
3. Phases (the clients are asyncio connections in this process, so 100 of
   them cost no threads; every request has a 60 s limit):
   - one client: --requests requests one after another on a keep-alive
     connection, alternating between the servers in a random order; and,
     between them, the bare work for the same request in this process
     (`OnlineScorer.score`: the features' statements and one forward pass,
     one torch and one DuckDB thread, no HTTP): p50/p99 of each;
   - 20 and 100 concurrent clients, each --per-client requests (100 clients:
     a fifth of that) on its own keep-alive connection: p50/p99, errors (resets, timeouts, non-200),
     requests per second, and the model step of those requests as the
     server's access log reports it (2 busy cores);
   - a burst: 100 new connections at once, one request each: p50/p99/max,
     errors, and how many took over 1 s to connect (a full listen queue
     drops the SYN; the client tries again after 1 s);
   - throughput: one POST of the export's last --batch-rows rows end to end
     against the bare forward pass over those rows' windows (best of --repeats).
4. A Markdown table of all of it, with the load average at each phase.
"""

import argparse
import asyncio
import csv
import json
import os
import random
import re
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


def percentiles(seconds: list[float]) -> str:
    import numpy as np

    if not seconds:
        return "-"
    ms = np.array(seconds) * 1000
    return f"{np.percentile(ms, 50):.1f} / {np.percentile(ms, 99):.1f}"


async def _exchange(reader, writer, request: bytes) -> tuple[int, bool]:
    """One request on an open connection: (status, whether the server keeps the connection)."""
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            keep = False
    await reader.readexactly(length)
    return status, keep


async def _client(port: int, requests: list[bytes], results: list, keep_alive: bool = True) -> None:
    connection = None
    for request in requests:
        started = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
                results.append(("connected", time.perf_counter() - started))
            status, keep = await asyncio.wait_for(_exchange(*connection, request), 60)
            results.append((status, time.perf_counter() - started))
            if not (keep and keep_alive):
                connection[1].close()
                connection = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
            results.append((type(error).__name__, time.perf_counter() - started))
            if connection is not None:
                connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


def load(port: int, per_client: list[list[bytes]], keep_alive: bool = True) -> dict:
    """Every client at once, each its requests in turn: latencies, errors, throughput, slow connects."""

    async def run() -> list:
        results: list = []
        await asyncio.gather(*(_client(port, requests, results, keep_alive) for requests in per_client))
        return results

    started = time.perf_counter()
    results = asyncio.run(run())
    elapsed = time.perf_counter() - started
    ok = [s for status, s in results if status == 200]
    errors = [str(status) for status, _ in results if status not in (200, "connected")]
    connects = [s for status, s in results if status == "connected"]
    return {
        "latency": percentiles(ok),
        "max": f"{max(ok) * 1000:.0f}" if ok else "-",
        "errors": f"{len(errors)}" + (f" ({', '.join(sorted(set(errors)))})" if errors else ""),
        "rate": f"{len(ok) / elapsed:.0f}/s",
        "slow_connects": sum(s > 1.0 for s in connects),
        "load": f"{os.getloadavg()[0]:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="one client's requests, to each server")
    parser.add_argument("--per-client", type=int, default=10, help="requests of each of 20 clients (of 100: a fifth)")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the project (e.g. `git worktree add --detach /tmp/serve-before ced8233`): "
        "its server runs beside this tree's on the same home, every phase against both",
    )
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    home = OUT / f"serving-{args.rows}" / "home"
    exports = home.parent / "exports"
    os.environ["ENGAGEMENT_HOME"] = str(home)
    os.environ["ENGAGEMENT_EXPORTS_DIR"] = str(exports)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("ENGAGEMENT_SERVE_TOKEN", None)  # loopback, no token: the same requests for both servers
    export = exports / "export.csv"
    if args.build_only:
        from engagement_pipeline.sample import write_export

        exports.mkdir(parents=True, exist_ok=True)
        write_export(export, n_classifications=args.rows, seed=11)
        build_home(home, export)
        return
    if not (home / "serving" / "history.parquet").exists():
        # In a process of its own: training sets torch's thread count, which would skew the bare work here.
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--build-only"], check=True)
        print(f"pipeline home {home} built in {time.perf_counter() - started:.0f}s", flush=True)

    import numpy as np
    import torch

    from engagement_pipeline.ingest.load import load_salt
    from engagement_pipeline.model.windows import gather_windows, load_feature_matrix
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.serving.history_snapshot import snapshot_path
    from engagement_pipeline.serving.online_features import OnlineFeatures
    from engagement_pipeline.serving.server import OnlineScorer
    from engagement_pipeline.settings import Settings

    torch.set_num_threads(1)  # as each of the server's scoring threads runs it
    with open(export, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_user: dict[str, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"] or row["user_name"], []).append(row)
    users = sorted(by_user)
    resources = resources_for(Settings.from_environment())
    storage, tracking = resources["storage"], resources["tracking"]
    features = OnlineFeatures(snapshot_path(storage.serving), load_salt(storage.salt_file), threads=1)
    features.load()
    bare = OnlineScorer(features, tracking, champion_check_s=0)
    champion = bare.champion
    batch = rows[-args.batch_rows :]
    with resources["warehouse"].connect() as con:
        matrix = load_feature_matrix(con)
    index = np.flatnonzero(np.isin(matrix.classification_id, [int(r["classification_id"]) for r in batch]))
    windows = [gather_windows(matrix, index[s : s + 8192], champion.window) for s in range(0, len(index), 8192)]
    print(f"{len(rows):,} classifications, {len(users):,} volunteers; champion v{champion.version} "
          f"(K={champion.window}, F={len(champion.feature_names)}); {os.cpu_count()} cores", flush=True)  # fmt: skip

    rng = random.Random(0)

    def volunteer_bodies(n: int) -> list[bytes]:
        return [json.dumps({"dataframe_records": by_user[rng.choice(users)][-100:]}).encode() for _ in range(n)]

    trees = ([("before", args.baseline.resolve())] if args.baseline else []) + [("this tree", ROOT)]
    servers = [Served(name, tree, home.parent / f"serve-{i}.log") for i, (name, tree) in enumerate(trees)]
    table: dict[str, dict[str, str]] = {served.name: {} for served in [*servers]}
    table["bare work"] = {}
    try:
        for served in servers:
            served.wait_ready()
        for body in volunteer_bodies(10):  # warm-up: pooled connections, the model's first calls
            bare.score(body)
            for served in servers:
                served.post_body(body)

        # One client, alternating; the bare work for the same request between them.
        work, steps = [], []
        for body in volunteer_bodies(args.requests):
            for served in rng.sample(servers, len(servers)):
                served.latencies.append(served.post_body(body))
            started = time.perf_counter()
            _, timing = bare.score(body)
            work.append(time.perf_counter() - started)
            steps.append(float(re.search(r"model ([0-9.]+) ms", timing).group(1)) / 1000)
        load_now = f"{os.getloadavg()[0]:.1f}"
        for served in servers:
            table[served.name]["one client p50 / p99 ms"] = percentiles(served.latencies) + f" (load {load_now})"
        table["bare work"]["one client p50 / p99 ms"] = percentiles(work) + f"; model step {percentiles(steps)}"
        print(f"one client, {args.requests} requests each: done (load {load_now})", flush=True)

        for clients, each in ((20, args.per_client), (100, max(1, args.per_client // 5))):
            plan = [volunteer_bodies(each) for _ in range(clients)]
            for served in servers:
                mark = served.log_size()
                result = load(served.port, [[served.request(b) for b in bodies] for bodies in plan])
                row = table[served.name]
                row[f"{clients} clients p50 / p99 ms"] = f"{result['latency']} (load {result['load']})"
                row[f"{clients} clients errors"] = result["errors"]
                row[f"{clients} clients throughput"] = result["rate"]
                row[f"{clients} clients model step p50 / p99 ms"] = served.model_steps(mark)
                print(f"{clients} clients x {each}, {served.name}: {result}", flush=True)

        burst = volunteer_bodies(100)
        for served in servers:
            result = load(served.port, [[served.request(b, close=True)] for b in burst], keep_alive=False)
            row = table[served.name]
            row["burst of 100 p50 / p99 / max ms"] = f"{result['latency']} / {result['max']} (load {result['load']})"
            row["burst errors; connects over 1 s"] = f"{result['errors']}; {result['slow_connects']}"
            print(f"burst of 100 connections, {served.name}: {result}", flush=True)

        forward = []
        for _ in range(args.repeats):
            for served in servers:
                served.served.append(served.post_body(json.dumps({"dataframe_records": batch}).encode()))
            started = time.perf_counter()
            for chunk in windows:
                champion.model.predict(chunk)
            forward.append(time.perf_counter() - started)
        b = min(forward)
        table["bare work"][f"{len(batch):,} rows: rows/s"] = f"{len(batch) / b:,.0f} (forward pass only)"
        for served in servers:
            a = min(served.served)
            table[served.name][f"{len(batch):,} rows: rows/s"] = f"{len(batch) / a:,.0f} (a/b {b / a:.2f})"
    finally:
        bare.close()
        for served in servers:
            served.stop()

    names = list(table)
    measures = list(dict.fromkeys(m for row in table.values() for m in row))
    print()
    print("| " + " | ".join(["", *names]) + " |")
    print("| " + " | ".join(["---"] * (len(names) + 1)) + " |")
    for measure in measures:
        print("| " + " | ".join([measure, *(table[n].get(measure, "") for n in names)]) + " |")


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

    def request(self, body: bytes, close: bool = False) -> bytes:
        return (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
        ).encode() + body

    def post_body(self, body: bytes) -> float:
        start = time.perf_counter()
        response = self.http.post(f"{self.url}/invocations", data=body, headers={"Content-Type": "application/json"})
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.text
        return elapsed

    def log_size(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size

    def model_steps(self, since: int) -> str:
        """p50/p99 of the model step of the requests answered since `since`, from the access log."""
        time.sleep(0.3)
        with open(self.log_path, "rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
        return percentiles([float(ms) / 1000 for ms in re.findall(r"model ([0-9.]+) ms", text)])

    def stop(self) -> None:
        from engagement_pipeline_tests.test_servers import stop_group

        stop_group(self.process)  # SIGTERM to the whole group, SIGKILL what is left; returns once none runs
        self.log.close()
        self.http.close()


if __name__ == "__main__":
    main()
