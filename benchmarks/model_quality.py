"""Model quality: test ROC-AUC of the LSTM and every baseline, per horizon, on several generated samples.

    .venv/bin/python benchmarks/model_quality.py                       # seeds 7 11 23 at 150k, seed 7 at 300k
    .venv/bin/python benchmarks/model_quality.py --seeds 7 11 23 --rows 150000 --extra-sizes 300000
    .venv/bin/python benchmarks/model_quality.py --shapes default traits habits --seeds 7 --extra-sizes
    .venv/bin/python benchmarks/model_quality.py --exports ../shared/data/real/serengeti-talk-panoptes.csv.gz
    .venv/bin/python benchmarks/model_quality.py --shapes default traits habits --seeds 7 --extra-sizes --no-timing

With --exports (one or more export files), only those are trained on (one
sample per file), instead of generated samples. With --no-timing, each
generated export loses its task timing (`started_at` and `finished_at` in
`metadata`) before the ingest, as many real exports do.

For each shape of generated volunteers (`--shapes`, default: the bundled sample's `default`; see
engagement_pipeline/sample/shapes.py: `traits` and `habits` stop for other reasons than the default)
and each (seed, size) the generator writes an export
(`engagement_pipeline.sample.write_export`) into a fresh temporary ENGAGEMENT_HOME; the
real ingest, SQL models and `engagement_model` assets then run through
`dg.materialize` with the default training config, exactly as `engagement
demo` trains. The figures come from the MLflow run the asset logged: test
ROC-AUC per model and horizon (CONTRACT.md names), and the same on test rows
of volunteers never seen in training (`*_test_roc_auc_new_users_*`). Every
model is scored on the same test rows within a sample, so the columns of one
sample are directly comparable; `lstm wins` says whether the LSTM beats every
baseline on that horizon, and the last table gives each test ROC-AUC with its
volunteer-level bootstrap 95% interval and the lift over the best baseline
(`lift_roc_auc_{W}m`, paired intervals) in words.

Training takes ~2-3 minutes per 150k classifications on 2 cores; the default
run (four samples) takes ~15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("lstm", "logistic", "gbdt", "random_forest", "base_rate")


def drop_task_timing(export: Path) -> None:
    """Rewrite a generated export in place without `started_at` and `finished_at` in its metadata (DuckDB)."""
    import duckdb

    tmp = export.with_name(f".{export.name}.tmp")
    con = duckdb.connect()
    try:
        con.execute(
            f"""COPY (SELECT * REPLACE (regexp_replace(metadata, ',"(started|finished)_at":"[^"]*"', '', 'g')
                    AS metadata)
                  FROM read_csv('{export}', all_varchar = true, header = true))
                TO '{tmp}' (HEADER, FORMAT csv)"""
        )
        [(left,)] = con.execute(f"SELECT count(*) FROM read_csv('{tmp}', all_varchar = true) "
                                "WHERE metadata LIKE '%started_at%' OR metadata LIKE '%finished_at%'").fetchall()  # fmt: skip
        assert left == 0, f"{left} rows kept their task timing"
    finally:
        con.close()
    tmp.replace(export)


def train_on_sample(
    home: Path, seed: int, rows: int, shape: str, export: Path | None = None, no_timing: bool = False
) -> tuple[dict[str, float], list[int], float]:
    """Generate (or copy `export`), ingest, model and train in `home`; return the run's metrics, horizons, seconds."""
    import shutil

    import dagster as dg
    import mlflow

    from engagement_pipeline.ingest.assets import ingest_assets
    from engagement_pipeline.model.assets import engagement_model
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.sample import SAMPLE_FILE_NAME, write_export
    from engagement_pipeline.settings import Settings
    from engagement_pipeline.transform.sql_models import sql_model_assets

    os.environ["ENGAGEMENT_HOME"] = str(home)
    os.environ["ENGAGEMENT_EXPORTS_DIR"] = str(home / "exports")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the sample's own sqlite store under `home`
    if export is None:
        write_export(home / "exports" / SAMPLE_FILE_NAME, rows, seed, shape)
        if no_timing:
            drop_task_timing(home / "exports" / SAMPLE_FILE_NAME)
    else:
        (home / "exports").mkdir(parents=True, exist_ok=True)
        shutil.copy(export, home / "exports" / export.name)
    started = time.perf_counter()
    result = dg.materialize(
        [*ingest_assets, *sql_model_assets(), engagement_model],
        resources=resources_for(Settings.from_environment()),
    )
    seconds = time.perf_counter() - started
    metadata = result.asset_materializations_for_node("engagement_model")[0].metadata
    run_id = metadata["mlflow_run_id"].value
    training_seconds = metadata["training_seconds"].value
    run = mlflow.MlflowClient(tracking_uri=resources_for(Settings.from_environment())["tracking"].uri()).get_run(run_id)
    horizons = [int(h) for h in json.loads(run.data.params["horizons"])]
    print(
        f"shape {shape}, seed {seed}, {rows:,} rows: pipeline {seconds:.0f}s, of which training {training_seconds:.0f}s",
        flush=True,
    )
    return run.data.metrics, horizons, training_seconds


def prefix(model: str) -> str:
    return "" if model == "lstm" else f"{model}_"


def markdown_table(results: list[tuple[str, int, int, dict[str, float], list[int], float]]) -> str:
    """One row per (sample, model): test ROC-AUC per horizon, then on new users; a last row per sample says who won."""
    horizons = results[0][4]
    head = ["shape", "seed", "rows", "model"] + [f"{w}m" for w in horizons] + [f"{w}m new users" for w in horizons]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for shape, seed, rows, metrics, _, seconds in results:
        for model in MODELS:
            cells = [metrics.get(f"{prefix(model)}test_roc_auc_{w}m", float("nan")) for w in horizons]
            cells += [metrics.get(f"{prefix(model)}test_roc_auc_new_users_{w}m", float("nan")) for w in horizons]
            lines.append(f"| {shape} | {seed} | {rows:,} | {model} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")
        wins = []
        for key in ("test_roc_auc_{w}m", "test_roc_auc_new_users_{w}m"):
            for w in horizons:
                lstm = metrics.get(key.format(w=w), float("nan"))
                best = max(metrics.get(prefix(m) + key.format(w=w), float("nan")) for m in MODELS[1:])
                wins.append(f"{'yes' if lstm > best else 'NO'} ({lstm - best:+.4f})")
        lines.append(f"| {shape} | {seed} | {rows:,} | lstm wins (train {seconds:.0f}s) | " + " | ".join(wins) + " |")
    return "\n".join(lines)


def interval_table(results) -> str:
    """Test ROC-AUC [95% CI] per model and horizon, and the lift of the LSTM over the best baseline, per sample."""
    from engagement_pipeline.model.evaluation import markdown_table

    horizons = results[0][4]
    rows = []
    for shape, seed, rows_n, metrics, _, _ in results:
        for model in MODELS:
            cells = []
            for w in horizons:
                key = f"{prefix(model)}test_roc_auc_{w}m"
                v, lo, hi = (metrics.get(key + t, float("nan")) for t in ("", "_ci_low", "_ci_high"))
                cells.append(f"{v:.4f} [{lo:.4f}, {hi:.4f}]")
            rows.append([f"{shape} {seed}", f"{rows_n:,}", model, *cells])
        lift = []
        for w in horizons:
            v, lo, hi = (metrics.get(f"lift_roc_auc_{w}m" + t, float("nan")) for t in ("", "_ci_low", "_ci_high"))
            lift.append(f"{v:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        rows.append([f"{shape} {seed}", f"{rows_n:,}", "lift over best baseline", *lift])
    return markdown_table(["sample", "rows", "model", *(f"{w}m ROC-AUC [95% CI]" for w in horizons)], rows)


def main(argv: list[str] | None = None) -> int:
    from engagement_pipeline.sample import DEFAULT_SHAPE, SHAPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=tuple(SHAPES),
        default=[DEFAULT_SHAPE],
        help="generator shapes (default: default)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 23])
    parser.add_argument("--rows", type=int, default=150_000, help="classifications per sample for every seed")
    parser.add_argument(
        "--extra-sizes", type=int, nargs="*", default=[300_000], help="further sizes, run with the first seed"
    )
    parser.add_argument("--exports", type=Path, nargs="*", default=[], help="real export files instead of samples")
    parser.add_argument(
        "--no-timing", action="store_true", help="drop the task timing (started_at, finished_at) from generated exports"
    )
    args = parser.parse_args(argv)
    samples = [(seed, args.rows, None) for seed in args.seeds] + [(args.seeds[0], n, None) for n in args.extra_sizes]
    if args.exports:
        samples = [(path.name.split(".")[0], 0, path.resolve()) for path in args.exports]
    results = []
    for shape in args.shapes if not args.exports else ["real"]:
        for seed, rows, export in samples:
            with tempfile.TemporaryDirectory(prefix=f"model_quality_{shape}_{seed}_{rows}_") as folder:
                metrics, horizons, seconds = train_on_sample(Path(folder), seed, rows, shape, export, args.no_timing)
                results.append((shape, seed, rows, metrics, horizons, seconds))
            print(markdown_table(results[-1:]), flush=True)
    timing = ", generated exports without task timing" if args.no_timing and not args.exports else ""
    print(f"\nTest ROC-AUC (and on volunteers never seen in training), default training config{timing}:\n")
    print(markdown_table(results))
    print("\nWith volunteer-level bootstrap 95% intervals:\n")
    print(interval_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
