"""Scoring benchmark: the `user_predictions` asset against a bare forward pass of the same model.

    .venv/bin/python benchmarks/bench_scoring.py --users 1000000

1. Trains a small champion (the real `run_training`, on synthetic features and
   labels from engagement_pipeline_tests/training_fixtures.py) into a
   throwaway ENGAGEMENT_HOME.
2. Writes a `features` table with the same columns for --users users, each
   with --history classifications on the scored day, straight into DuckDB.
3. In the same process, alternately, times (a) `dg.materialize` of
   `user_predictions` for that day (champion lookup and pyfunc load, the
   DuckDB read of each user's last K rows, window gathering, prediction,
   the atomic Parquet write and its checks) and (b) a bare forward pass of
   the same model over arrays of the same shapes built beforehand, in
   batches of the same size: the pyfunc model's own predict, which measured
   faster here than calling the torch module that mlflow.pytorch.load_model
   returns, so it is the stronger bound. Reports users per second of each and a/b
   (target >= 0.7) and the peak RSS.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAY = "2024-03-15"


def train_champion(home: Path) -> None:
    import duckdb

    from engagement_pipeline.model.assets import run_training
    from engagement_pipeline.model.training import TrainingConfig, load_dataset
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.settings import Settings
    from engagement_pipeline_tests.training_fixtures import make_warehouse

    small = make_warehouse(home / "train.duckdb", n_rows=20_000, seed=1)
    with duckdb.connect(str(small), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        data = load_dataset(con)
    config = TrainingConfig(epochs=2, max_train_examples=10_000, forest_max_train_rows=5_000)
    run_training(data, config, resources_for(Settings.from_environment())["tracking"])


def write_day(path: Path, users: int, history: int, feature_names: list[str]) -> None:
    """`features` for `users` users, each with `history` classifications on DAY (random values)."""
    import duckdb

    columns = ", ".join(f"random()::float * 100 as {name}" for name in feature_names)  # our own names
    with duckdb.connect(str(path)) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            f"""
            create or replace table features as
            select i as classification_id,
                   'u' || (i // ?) as user_key,
                   ?::timestamptz + to_seconds(((i % ?) * 600 + (i // ?) % 3600)::bigint) as created_at,
                   {columns}
            from range(?::bigint) t(i)
            """,
            [history, f"{DAY} 00:00:00+00", history, history, users * history],
        )
        con.execute(
            "create or replace table classifications as select classification_id, user_key, created_at from features"
        )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=4, help="classifications per user on the day")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8192)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    os.environ["ENGAGEMENT_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import dagster as dg
    import numpy as np
    import torch

    from engagement_pipeline.model.registry import load_champion
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.scoring.assets import user_predictions
    from engagement_pipeline.settings import Settings

    started = time.perf_counter()
    train_champion(home)
    champion = load_champion(resources_for(Settings.from_environment())["tracking"])
    print(f"champion v{champion.version} trained in {time.perf_counter() - started:.0f}s "
          f"(K={champion.window}, F={len(champion.feature_names)})")  # fmt: skip
    write_day(home / "warehouse.duckdb", args.users, args.history, champion.feature_names)

    torch.set_num_threads(1)  # both sides: the asset runs in this process
    shape = (args.batch_size, champion.window, len(champion.feature_names))
    rng = np.random.default_rng(0)
    n_batches = -(-args.users // args.batch_size)
    prebuilt = [rng.random(shape, dtype=np.float32) * 100 for _ in range(min(n_batches, 8))]

    def bare() -> float:
        start = time.perf_counter()
        for b in range(n_batches):
            champion.model.predict(prebuilt[b % len(prebuilt)])
        return time.perf_counter() - start

    def asset() -> float:
        start = time.perf_counter()
        result = dg.materialize(
            [user_predictions],
            partition_key=DAY,
            resources=resources_for(Settings.from_environment()),
            run_config={"ops": {"user_predictions": {"config": {"batch_size": args.batch_size}}}},
        )
        assert result.success
        return time.perf_counter() - start

    times = {"asset": [], "bare": []}
    for _ in range(args.repeats):
        times["asset"].append(asset())
        times["bare"].append(bare())
    rows = len(
        __import__("pyarrow.parquet").parquet.read_table(
            resources_for(Settings.from_environment())["storage"].prediction_file(DAY)
        )
    )
    assert rows == args.users, rows
    best_asset, best_bare = min(times["asset"]), min(times["bare"])
    print(f"users: {args.users:,} x {args.history} classifications, batch {args.batch_size}, torch threads 1")
    print(f"(a) user_predictions asset: best {best_asset:.1f}s = {args.users / best_asset:,.0f} users/s")
    print(f"(b) bare forward pass:      best {best_bare:.1f}s = {args.users / best_bare:,.0f} users/s")
    print(f"throughput a/b = {best_bare / best_asset:.2f} (target >= 0.7); peak RSS {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
