"""Training benchmark: the real training loop against a bare torch loop, and peak memory at scale.

    .venv/bin/python benchmarks/bench_training.py                    # throughput on 200,000 rows
    .venv/bin/python benchmarks/bench_training.py --rss --rows 5000000
    .venv/bin/python benchmarks/bench_training.py --bootstrap --test-rows 100000

Throughput: `training.train_epoch` fed by `training.batches` (windows gathered
by index from the per-classification matrix, per batch) against a bare loop
over tensors of the same shapes built beforehand: same model, optimizer,
loss and gradient clipping, alternated in one process, best of --repeats.
The ratio is the share of the bare bound the real loop reaches (target >= 0.8).

--bootstrap: the evaluation of every model (LSTM + 4 baselines) x 3 horizons
with 200 volunteer-level resamples of --test-rows rows (~3,000 volunteers), against
scikit-learn computing the point metrics alone once (roc_auc, average
precision, Brier, log loss per model and horizon), in one process.

--rss: peak resident memory of a fresh process that does what the asset does
before the baselines: read `features` and `labels` from DuckDB, split, fit the
scaling, train the LSTM (linear start plus one epoch of --max-train-examples)
and predict every test row. The synthetic warehouse is written by a separate
process first, so its generation does not count. Add --baselines to fit the
four baselines too (minutes at millions of rows).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402

from engagement_pipeline.model.device import cores, set_threads  # noqa: E402
from engagement_pipeline.model.training import (  # noqa: E402
    TrainingConfig,
    batches,
    load_dataset,
    time_split,
    train_epoch,
)


def load(db: Path):
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return load_dataset(con)


def throughput(db: Path, config: TrainingConfig, n_batches: int, repeats: int) -> dict:
    import torch

    from engagement_pipeline.model.lstm import EngagementLSTM, fit_scaling

    set_threads(config.torch_threads)
    data = load(db)
    split = time_split(data.matrix.created_at, data.labels, data.horizons, config.train_fraction, config.val_fraction)
    rng = np.random.default_rng(0)
    rows = rng.choice(split.train, size=min(len(split.train), n_batches * config.batch_size), replace=False)
    scaling = fit_scaling(data.matrix.X[split.train])
    torch.manual_seed(0)
    model = EngagementLSTM(
        len(data.matrix.feature_names),
        len(data.horizons),
        scaling,
        config.hidden_size,
        config.num_layers,
        config.dropout,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    prebuilt = [
        (torch.from_numpy(x.copy()), torch.from_numpy(y.copy()))
        for x, y in batches(data.matrix, split.labels, rows, config.window, config.batch_size)
    ]

    def real() -> float:
        started = time.perf_counter()
        train_epoch(model, optimizer, batches(data.matrix, split.labels, rows, config.window, config.batch_size), "cpu")
        return len(rows) / (time.perf_counter() - started)

    def bare() -> float:
        from engagement_pipeline.model.lstm import train_step

        model.train()
        started = time.perf_counter()
        for x, y in prebuilt:
            train_step(model, optimizer, x, y).item()
        return len(rows) / (time.perf_counter() - started)

    real(), bare()  # warm up both
    real_best, bare_best = 0.0, 0.0
    for _ in range(repeats):
        real_best, bare_best = max(real_best, real()), max(bare_best, bare())
    return {
        "rows_in_table": len(data.matrix),
        "examples_per_pass": len(rows),
        "batch": [config.batch_size, config.window, len(data.matrix.feature_names)],
        "torch_threads": config.torch_threads,
        "real_examples_per_s": round(real_best),
        "bare_examples_per_s": round(bare_best),
        "ratio_real_to_bare": round(real_best / bare_best, 3),
    }


def rss_child(db: Path, config: TrainingConfig, baselines: bool) -> dict:
    """Runs in a fresh process: the asset's work up to the test predictions; reports its peak RSS."""
    from engagement_pipeline.model.baselines import fit_baselines
    from engagement_pipeline.model.lstm import fit_scaling
    from engagement_pipeline.model.training import predict, train_lstm

    set_threads(config.torch_threads)
    started = time.perf_counter()
    data = load(db)
    loaded = time.perf_counter() - started
    split = time_split(data.matrix.created_at, data.labels, data.horizons, config.train_fraction, config.val_fraction)
    scaling = fit_scaling(data.matrix.X[split.train])
    model, history = train_lstm(data.matrix, split, scaling, len(data.horizons), config)
    predict(model, data.matrix, split.test, config.window, "cpu")
    if baselines:
        from threadpoolctl import threadpool_limits

        threadpool_limits(config.baseline_threads or cores(), "openmp")
        fit_baselines(
            data.matrix.X, split.labels, split, scaling, data.matrix.feature_names, config.seed,
            config.forest_max_train_rows, config.baseline_max_candidates, config.baseline_max_train_rows,
            max_val_rows=config.baseline_max_val_rows,
        )  # fmt: skip
    return {
        "classifications": len(data.matrix),
        "labelled": int((~np.isnan(data.labels).all(axis=1)).sum()),
        "features": len(data.matrix.feature_names),
        "load_seconds": round(loaded, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "epochs": len(history) - 1,
        "baselines": baselines,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def bootstrap(test_rows: int, resamples: int) -> dict:
    """Seconds of evaluation.evaluate_models (point + intervals) vs scikit-learn's point metrics, side by side."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    from engagement_pipeline.model.evaluation import MODEL_PREFIX, evaluate_models

    rng = np.random.default_rng(0)
    volunteer = np.sort(rng.integers(0, max(2, test_rows // 33), test_rows))
    y = (rng.random((test_rows, 3)) < 0.6).astype(np.float32)
    predictions = {name: np.clip(0.15 * y + rng.random(y.shape), 0, 1) for name in MODEL_PREFIX}
    history, new_user = rng.integers(0, 200, test_rows), rng.random(test_rows) < 0.2
    started = time.perf_counter()
    for p in predictions.values():
        for h in range(3):
            q = np.clip(p[:, h], 1e-7, 1 - 1e-7)
            roc_auc_score(y[:, h], q), average_precision_score(y[:, h], q)
            brier_score_loss(y[:, h], q), log_loss(y[:, h], q)
    sklearn_seconds = time.perf_counter() - started
    started = time.perf_counter()
    evaluation = evaluate_models(predictions, y, [10, 20, 30], history, new_user, volunteer, resamples)
    seconds = time.perf_counter() - started
    return {
        "test_rows": test_rows,
        "volunteers": evaluation.n_volunteers,
        "resamples": resamples,
        "metrics_logged": len(evaluation.metrics),
        "evaluate_seconds": round(seconds, 2),
        "sklearn_point_metrics_seconds": round(sklearn_seconds, 2),
        "ratio_to_sklearn_points": round(seconds / sklearn_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic classifications in the warehouse")
    parser.add_argument("--batches", type=int, default=60, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss", action="store_true", help="measure peak RSS of a training process instead")
    parser.add_argument("--baselines", action="store_true", help="with --rss: fit the baselines too")
    parser.add_argument("--max-train-examples", type=int, default=30_000)
    parser.add_argument("--bootstrap", action="store_true", help="time the evaluation with bootstrap intervals")
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bootstrap:
        print(json.dumps(bootstrap(args.test_rows, args.resamples)))
        return 0
    config = TrainingConfig(epochs=1, patience=1, max_train_examples=args.max_train_examples)

    if args.child:
        print(json.dumps(rss_child(args.child, config, args.baselines)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "warehouse.duckdb"
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from pathlib import Path; import sys; sys.path.insert(0, {str(ROOT)!r}); "
                f"from engagement_pipeline_tests.training_fixtures import make_warehouse; "
                f"make_warehouse(Path({str(db)!r}), n_rows={args.rows})",
            ],
            check=True,
        )
        print(f"synthetic warehouse: {args.rows:,} rows in {time.perf_counter() - started:.1f}s", flush=True)
        if args.rss:
            command = [
                sys.executable,
                __file__,
                "--child",
                str(db),
                "--max-train-examples",
                str(args.max_train_examples),
            ]
            output = subprocess.run(
                command + (["--baselines"] if args.baselines else []), check=True, capture_output=True, text=True
            ).stdout
            print(output.strip().splitlines()[-1])
        else:
            print(json.dumps(throughput(db, config, args.batches, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
