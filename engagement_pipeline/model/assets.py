"""The `engagement_model` asset: load, split, fit, evaluate, log, register, promote.

The asset holds the warehouse connection only to read `features` and
`labels`, then `run_training` takes the steps in order, each a function of
its own module:

    split          training.time_split, with the periods' sizes and any horizon of one outcome named
    fit            training.train_lstm (the LSTM) and baselines.fit_baselines
    evaluate       evaluation.evaluate_models: every metric with its volunteer-level 95% interval, the lift
    log            one MLflow run named e.g. `lstm-k20-2025-09-14` (K, the data's last day) with a description
    register       registry.log_lstm + registry.register, with the compatibility tags
    promote        registry.promote: the gate of CONTRACT.md "Model registry"

The asset's metadata says it in words a person reads at a glance (rounded
figures, "none yet", "better than logistic by 0.012 [0.004, 0.020]").
"""

import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np

from engagement_pipeline.model import evaluation, outage, registry
from engagement_pipeline.model.budget import budget_params, budget_text, scaling_rows
from engagement_pipeline.model.device import cores, set_threads
from engagement_pipeline.model.training import (
    Dataset,
    Split,
    TrainingConfig,
    load_dataset,
    predict,
    stopping_summary,
    time_split,
    train_lstm,
)
from engagement_pipeline.model.windows import gather_windows
from engagement_pipeline.monitoring.drift import drift_reference_for, log_drift_reference
from engagement_pipeline.monitoring.plots import KINDS, PlotLabel, curves_png, png_markdown
from engagement_pipeline.ops.progress import heartbeat
from engagement_pipeline.ops.stalled_runs import fail_stalled_mlflow_runs, process_tags
from engagement_pipeline.resources import Tracking, Warehouse


@dataclass
class TrainingResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    version: str
    promotion: registry.Promotion
    metrics: dict[str, float]
    horizons: list[int]
    history: list[dict]
    seconds: float
    comparison: str
    stopping: str = ""
    lift: dict[int, str] = field(default_factory=dict)
    dropped_features: list[str] = field(default_factory=list)
    degenerate_horizons: dict[int, str] = field(default_factory=dict)
    chosen_parameters: dict[str, dict[int, str]] = field(default_factory=dict)
    test_predictions: np.ndarray = field(repr=False, default=None)  # the LSTM's P(continue) on split.test, in order
    plots: dict[str, bytes] = field(repr=False, default_factory=dict)
    budget: str = ""

    @property
    def run_url(self) -> str:
        # workflowType: MLflow 3.17 shows the run in its model-training views (README, Models in MLflow)
        return (
            f"http://127.0.0.1:5000/#/experiments/{self.experiment_id}/runs/{self.run_id}?workflowType=machine_learning"
        )


def day(us: int) -> str:
    return str(np.datetime64(int(us), "us").astype("datetime64[D]"))


def split_dataset(data: Dataset, config: TrainingConfig, say) -> tuple[Split, dict[int, str]]:
    """The time split, checked: both periods used for fitting and judging hold examples; one-outcome horizons named."""
    split = time_split(data.matrix.created_at, data.labels, data.horizons, config.train_fraction, config.val_fraction)
    if not len(split.train) or not len(split.test):
        raise ValueError(f"empty split: {len(split.train)} train / {len(split.test)} test examples")
    say(f"split: {len(split.train):,} train / {len(split.val):,} val / {len(split.test):,} test examples")
    degenerate = {}
    for h, minutes in enumerate(data.horizons):
        y = split.labels[split.train, h]
        stops, continues = int((y == 0).sum()), int((y == 1).sum())
        if not stops or not continues:
            degenerate[minutes] = f"{continues:,} continue / {stops:,} stop in train"
            say(
                f"horizon {minutes} min has one outcome in train ({degenerate[minutes]}): every model predicts "
                "its base rate there, and its test ROC-AUC is undefined"
            )
    return split, degenerate


PROGRESS_EVERY_S = 10  # a long step says how far it is at least this often (between its own steps)


def epoch_logger(horizons: list[int], config: TrainingConfig, say):
    """Per-epoch MLflow metrics (train_loss, val_loss, val_roc_auc_{W}m at step = epoch) and a log line."""
    import mlflow

    explained: set[int] = set()

    def on_epoch(row: dict) -> None:
        aucs = {f"val_roc_auc_{w}m": row[f"val_roc_auc_{h}"] for h, w in enumerate(horizons)}
        mlflow.log_metrics({"train_loss": row["train_loss"], "val_loss": row["val_loss"], **aucs}, step=row["epoch"])
        values = [row[f"val_roc_auc_{h}"] for h in range(len(horizons))]
        auc_text = ", ".join(f"{w}m {v:.3f}" if np.isfinite(v) else f"{w}m n/a" for w, v in zip(horizons, values))
        which = " (linear path alone)" if row["epoch"] == 0 else ""
        say(
            f"epoch {row['epoch']}/{config.epochs}{which}: loss {row['train_loss']:.4f} train, "
            f"{row['val_loss']:.4f} val; val ROC-AUC {auc_text} ({row['seconds']:.1f}s)"
        )
        undefined = [w for w, v in zip(horizons, values) if not np.isfinite(v) and w not in explained]
        if undefined:
            explained.update(undefined)
            say(
                f"val ROC-AUC at {', '.join(f'{w}' for w in undefined)} min is n/a: the validation rows hold only one "
                "outcome there (no volunteer both stopped and kept going), so it cannot rank them; the loss still counts"
            )

    return on_epoch


def run_description(data: Dataset, split: Split, config: TrainingConfig) -> str:
    """The run's description (mlflow.note.content): what it is, and where its curves are."""
    return (
        f"LSTM over each volunteer's last {config.window} classifications, predicting P(still classifying) "
        f"{', '.join(f'{w}' for w in data.horizons)} minutes later, beside base-rate, logistic, gradient-boosted "
        f"and random-forest baselines on the same time split. Data: {len(data.matrix):,} classifications up to "
        f"{day(data.matrix.created_at.max())}; test period from {day(split.test_start_us)}.\n\n"
        "Per-epoch curves: `train_loss`, `val_loss` and `val_roc_auc_{W}m` (step = epoch; epoch 0 = the linear path "
        "alone). Test metrics: `test_roc_auc_{W}m` etc. with `_ci_low`/`_ci_high` (volunteer bootstrap 95%); "
        "`lift_roc_auc_{W}m` = LSTM minus the best baseline. Artifacts: model_card.md, roc/pr/calibration PNGs."
    )


def key_figures(scored, promotion, horizons: list[int]) -> str:
    """The run's first lines in the MLflow UI (its description): test ROC-AUC per horizon, lift, the decision."""
    m, lift = scored.metrics, evaluation.lift_sentences(scored)
    rows = [
        f"| {w} min | {m.get(f'test_roc_auc_{w}m', float('nan')):.3f} "
        f"({m.get(f'test_roc_auc_{w}m_ci_low', float('nan')):.3f} to {m.get(f'test_roc_auc_{w}m_ci_high', float('nan')):.3f}) "
        f"| LSTM {lift.get(w, 'not compared')} |"
        for w in horizons
    ]
    decision = "**Promoted to champion.**" if promotion.promoted else "**Not promoted.**"
    return "\n".join(
        [
            f"{decision} {promotion.reason}",
            "",
            "| horizon | test ROC-AUC (95% interval) | against the best baseline |",
            "| --- | --- | --- |",
            *rows,
        ]
    )


def run_training(data: Dataset, config: TrainingConfig, tracking: Tracking, log=None, progress=None) -> TrainingResult:
    """Split, fit, evaluate, log to MLflow, register and promote. `log` is any logger with .info; `progress`, a
    dict, receives the registered `version` and the `promotion` as they happen (model/outage.py reads it)."""
    import mlflow

    from engagement_pipeline.model.lstm import fit_scaling

    say = log.info if log is not None else (lambda message: None)
    started, progress = time.perf_counter(), {} if progress is None else progress
    set_threads(config.torch_threads)
    matrix, horizons = data.matrix, data.horizons
    split, degenerate = split_dataset(data, config, say)
    client = tracking.client()
    experiment_id = client.get_experiment_by_name(tracking.experiment_name).experiment_id
    for stale_run in fail_stalled_mlflow_runs(client, experiment_id):
        say(f"marked MLflow run {stale_run} FAILED: the training process that ran it is gone")
    run_name = f"lstm-k{config.window}-{day(matrix.created_at.max())}"
    description = run_description(data, split, config)
    with mlflow.start_run(run_name=run_name, description=description, tags=process_tags()) as run:
        registry.mark_experiment(client, run.info.experiment_id)
        test_set = log_inputs(data, split, config, degenerate)
        log_drift_reference(drift_reference_for(matrix, split.train, split.val_start_us))  # for feature_drift
        scaling = fit_scaling(matrix.X[scaling_rows(split.train, config.seed)])
        on_epoch = epoch_logger(horizons, config, say)
        model, history = train_lstm(matrix, split, scaling, len(horizons), config, on_epoch, say)
        stopping = stopping_summary(history, config.epochs, config.patience)
        say(f"LSTM {stopping}")
        lstm_seconds = time.perf_counter() - started
        p_lstm = predict(model, matrix, split.test, config.window, "cpu", say=say)
        baselines_started = time.perf_counter()
        fitted = fit_all_baselines(data, split, scaling, config, say)
        baseline_seconds = time.perf_counter() - baselines_started
        predictions = {"lstm": p_lstm, **fitted.predictions}
        scored = evaluate_run(data, split, predictions, config, say)
        paths = path_words(model.path_choice, horizons)
        example = gather_windows(matrix, split.test[: min(8, len(split.test))], config.window)
        logged = registry.log_lstm(model, example, len(horizons))
        log_evaluation(scored, fitted, stopping, lstm_seconds, baseline_seconds, logged.model_id, test_set)
        log_paths(model.path_choice, paths, horizons, logged.model_id)
        tags = registry.compatibility_tags(horizons, config.window, matrix.feature_names, run.info.run_id)
        tags["paths"] = json.dumps(paths)
        version = progress["version"] = registry.register(logged.model_uri, tracking.registered_model_name, tags)
        promotion = registry.promote(
            client, tracking.registered_model_name, version, matrix, split.test, split.labels[split.test], p_lstm,
            horizons, config.bootstrap_resamples, config.seed,
        )  # fmt: skip
        progress["promotion"] = promotion
        say(f"per horizon, chosen on validation ROC-AUC: {', '.join(f'{w}m {p}' for w, p in paths.items())}")
        (log.warning if promotion.failed_closed and log is not None else say)(
            f"registered version {version}: {promotion.reason}"
        )
        log_promotion(promotion)
        mlflow.set_tag("mlflow.note.content", key_figures(scored, promotion, horizons) + "\n\n" + description)
        comparison = evaluation.comparison_markdown(scored.metrics, horizons)
        label = PlotLabel(
            f"{tracking.registered_model_name} v{version} and baselines", "test period", day(matrix.created_at.max())
        )
        plots = {kind: curves_png(kind, predictions, split.labels[split.test], horizons, label) for kind in KINDS}
        card = model_card(data, split, config, scored, promotion, stopping, fitted, paths)
        log_artifacts(plots, scored, data, config, scaling, card)
        client.update_model_version(tracking.registered_model_name, version, description=card)
    return TrainingResult(
        run_id=run.info.run_id, experiment_id=run.info.experiment_id, tracking_uri=tracking.uri(), version=version,
        promotion=promotion, metrics=scored.metrics, horizons=horizons, history=history,
        seconds=time.perf_counter() - started, comparison=comparison, stopping=stopping,
        lift=evaluation.lift_sentences(scored), dropped_features=fitted.dropped_features,
        degenerate_horizons=degenerate, chosen_parameters=fitted.chosen, test_predictions=p_lstm, plots=plots,
        budget=budget_text(len(split.train), len(split.val), config, len(history) - 1),
    )  # fmt: skip


def fit_all_baselines(data: Dataset, split: Split, scaling, config: TrainingConfig, say):
    """The four baselines on the same split, saying which features they had to drop."""
    from threadpoolctl import threadpool_limits

    from engagement_pipeline.model.baselines import fit_baselines

    say("fitting baselines per horizon: logistic, boosted trees, random forest (tuned on validation)")
    matrix, started, said = data.matrix, time.perf_counter(), [time.perf_counter()]

    def progress(done: int, total: int, name: str, h: int, seconds: float) -> None:
        if done < total and time.perf_counter() - said[0] < PROGRESS_EVERY_S:
            return
        said[0] = time.perf_counter()
        left = (said[0] - started) / done * (total - done)
        remaining = f", about {left:.0f}s left" if done < total else f"; {said[0] - started:.0f}s in all"
        say(f"baselines {done}/{total} fitted: last {name} at {data.horizons[h]} min ({seconds:.0f}s{remaining})")

    def still(seconds: float) -> None:
        say(f"baselines: still fitting ({seconds:.0f}s in all so far)")

    # OpenMP's threads (gradient boosting) held to `baseline_threads` in this thread, where the fits run
    with heartbeat(said, still, started), threadpool_limits(config.baseline_threads or cores(), "openmp"):
        fitted = fit_baselines(
            matrix.X, split.labels, split, scaling, matrix.feature_names, config.seed,
            config.forest_max_train_rows, config.baseline_max_candidates, config.baseline_max_train_rows, progress,
            config.baseline_max_val_rows,
        )  # fmt: skip
    if fitted.dropped_features:
        say(f"baselines: dropped features with no observed value in train: {', '.join(fitted.dropped_features)}")
    return fitted


def evaluate_run(
    data: Dataset, split: Split, predictions: dict, config: TrainingConfig, say=lambda message: None
) -> evaluation.Evaluation:
    """Every model on the same test rows, intervals over the test period's volunteers."""
    matrix, started, said = data.matrix, time.perf_counter(), [time.perf_counter()]
    say(f"testing {len(predictions)} models on {len(split.test):,} test rows ({config.bootstrap_resamples} resamples)")

    def progress(done: int, total: int) -> None:
        if done < total and time.perf_counter() - said[0] < PROGRESS_EVERY_S:
            return
        said[0] = time.perf_counter()
        left = (said[0] - started) / done * (total - done)
        say(f"tested {done}/{total} horizons" + (f", about {left:.0f}s left" if done < total else ""))

    train_users = np.unique(matrix.user_start[split.train])
    new_user = ~np.isin(matrix.user_start[split.test], train_users)
    return evaluation.evaluate_models(
        predictions, split.labels[split.test], data.horizons, matrix.position_in_user[split.test], new_user,
        volunteer=matrix.user_start[split.test], n_resamples=config.bootstrap_resamples, seed=config.seed,
        progress=progress,
    )  # fmt: skip


def log_inputs(data: Dataset, split: Split, config: TrainingConfig, degenerate: dict[int, str]):
    """The run's parameters, and its training and test sets as MLflow datasets (schema, profile, digest: the rows'
    current features and labels, not a copy of them). Returns the test set, which the test metrics name."""
    import mlflow

    mlflow.log_params({**config.model_dump(), "horizons": data.horizons, "n_features": len(data.matrix.feature_names)})
    n_baseline = min(len(split.train), config.baseline_max_train_rows)
    mlflow.log_params({"n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test)})
    mlflow.log_params(budget_params(len(split.train), len(split.val), config))
    mlflow.log_params(
        {"n_baseline_train": n_baseline, "n_baseline_val": min(len(split.val), config.baseline_max_val_rows)}
    )
    if degenerate:
        mlflow.set_tag("one_outcome_horizons", "; ".join(f"{w}m: {text}" for w, text in degenerate.items()))
    last = day(data.matrix.created_at.max())
    sets = {}
    for context, rows in (("training", split.train), ("testing", split.test)):
        with warnings.catch_warnings():  # a text source matches two of MLflow's local source types: either is right
            warnings.filterwarnings(
                "ignore", message="The specified dataset source can be interpreted in multiple ways"
            )
            sets[context] = mlflow.data.from_numpy(
                {name: data.matrix.X[rows, j] for j, name in enumerate(data.matrix.feature_names)},
                source=f"warehouse features + labels up to {last}",
                targets={f"continues_{w}m": split.labels[rows, h] for h, w in enumerate(data.horizons)},
                name=f"{context} period ({len(rows):,} rows, current classification)",
            )
        mlflow.log_input(sets[context], context=context)
    return sets["testing"]


def log_evaluation(scored, fitted, stopping: str, lstm_seconds: float, baseline_seconds: float, model_id, test_set):
    """Test metrics with their intervals on the run and on the logged model (`model_id`), naming the test set.

    Every logged metric is a function of the data, config and seed; the seconds are tags (they vary with load).
    """
    import mlflow

    mlflow.log_metrics({k: v for k, v in scored.metrics.items() if np.isfinite(v)}, model_id=model_id, dataset=test_set)
    mlflow.set_tags({"lstm_training_seconds": f"{lstm_seconds:.1f}", "baselines_seconds": f"{baseline_seconds:.1f}"})
    mlflow.set_tag("early_stopping", stopping)
    mlflow.set_tag("baselines_dropped_features", ", ".join(fitted.dropped_features) or "none")
    for name, per_horizon in fitted.chosen.items():
        mlflow.log_param(f"{name}_chosen", json.dumps({str(h): label for h, label in per_horizon.items()}))
    for minutes, words in evaluation.lift_sentences(scored).items():
        mlflow.set_tag(f"lift_{minutes}m", f"LSTM {words}")


def path_words(choice, horizons: list[int]) -> dict[int, str]:
    return {w: choice.paths[h] for h, w in enumerate(horizons)}


def log_paths(choice, paths: dict[int, str], horizons: list[int], model_id) -> None:
    """Which path each horizon's output comes from, and the validation ROC-AUC both paths had."""
    import mlflow

    mlflow.log_param("paths", json.dumps({str(w): p for w, p in paths.items()}))
    values = {}
    for h, w in enumerate(horizons):
        values[f"val_roc_auc_sequence_model_{w}m"] = choice.val_roc_auc_sequence[h]
        values[f"val_roc_auc_linear_path_{w}m"] = choice.val_roc_auc_linear[h]
    mlflow.log_metrics({k: v for k, v in values.items() if np.isfinite(v)}, model_id=model_id)


def log_promotion(promotion: registry.Promotion) -> None:
    import mlflow

    mlflow.set_tags({"registered_version": promotion.version, "champion_decision": promotion.reason})
    values = {"promoted": float(promotion.promoted), "promotion_new_mean_test_roc_auc": promotion.new_score}
    values |= {"promotion_new_mean_test_roc_auc_ci_low": promotion.new_ci_low}
    values |= {"promotion_new_mean_test_roc_auc_ci_high": promotion.new_ci_high}
    if promotion.champion_score is not None:
        values["promotion_champion_mean_test_roc_auc"] = promotion.champion_score
    mlflow.log_metrics({k: v for k, v in values.items() if np.isfinite(v)})


def log_artifacts(plots: dict[str, bytes], scored, data: Dataset, config: TrainingConfig, scaling, card: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for kind, png in plots.items():
            (root / f"{kind}.png").write_bytes(png)
        table = evaluation.metrics_frame(scored.metrics, data.horizons)
        table.to_csv(root / "metrics.csv", index=False)
        (root / "metrics.md").write_text(evaluation.frame_markdown(table))
        names = data.matrix.feature_names
        inputs = {"feature_names": names, "window": config.window, "horizons": data.horizons}
        (root / "features.json").write_text(json.dumps(inputs | {"scaling": scaling.to_json(names)}, indent=2))
        (root / "model_card.md").write_text(card)
        mlflow.log_artifacts(folder)


def model_card(data, split, config, scored, promotion, stopping: str, fitted, paths: dict[int, str]) -> str:
    lift = "\n".join(f"- {w} min: LSTM {words}" for w, words in evaluation.lift_sentences(scored).items())
    chosen = "; ".join(
        f"{name} " + ", ".join(f"{data.horizons[h]}m {label}" for h, label in per.items())
        for name, per in fitted.chosen.items()
    )
    return f"""# engagement-lstm v{promotion.version}

Predicts P(a volunteer is still classifying W minutes later) for W in {data.horizons} minutes,
from their last {config.window} classifications (left-padded with all-NaN rows).

- Input: float32 [B, {config.window}, {len(data.matrix.feature_names)}] raw features (NaN = missing),
  in the order of `features.json`. Output: [B, {len(data.horizons)}] probabilities, columns = horizons.
- Data: {len(data.matrix):,} classifications up to {day(data.matrix.created_at.max())}; train {len(split.train):,} /
  validation {len(split.val):,} / test {len(split.test):,} labelled examples. Validation from
  {day(split.val_start_us)}, test from {day(split.test_start_us)}; labels that could see into the next period were purged.
- Model: {config.num_layers}-layer LSTM, hidden {config.hidden_size}, dropout {config.dropout}, history fed as
  differences from the current classification, linear skip from the current one; scaling fitted on train only.
  Training {stopping}. Output per horizon, chosen on validation ROC-AUC between the sequence model and its own
  linear path alone (tuned on the logistic baseline's grid of C): {", ".join(f"{w}m {p}" for w, p in paths.items())}.
- Baselines' parameters, chosen on validation: {chosen or "none (one outcome)"}.
  Features dropped for the baselines (no observed value in train): {", ".join(fitted.dropped_features) or "none"}.
- Promotion: {promotion.reason}.

## Lift over the best baseline (test ROC-AUC, volunteer bootstrap 95% interval)

{lift or "- not measurable (no horizon with both outcomes in test)"}

## Test metrics (same rows for every model)

{evaluation.comparison_markdown(scored.metrics, data.horizons)}"""


# --------------------------------------------------------------------------- the asset


def rounded(value: float | None, digits: int = 4):
    """A float for the UI rounded to `digits`, or the words "none yet" for a missing value."""
    if value is None or not np.isfinite(value):
        return "none yet"
    return dg.MetadataValue.float(round(float(value), digits))


@dg.asset(
    name="engagement_model",
    deps=[dg.AssetKey("features"), dg.AssetKey("labels")],
    group_name="training",
    kinds={"pytorch", "mlflow"},
    owners=["team:engagement"],
    description=(
        "Trains the LSTM over each volunteer's last K classifications (with base-rate, logistic, gradient-boosted "
        "and random-forest baselines, their key parameters chosen on validation, on the same time split), logs "
        "every test metric with a volunteer-level bootstrap 95% interval and the LSTM's lift over the best "
        "baseline to MLflow, registers `engagement-lstm`, and moves the `champion` alias only to a version whose "
        "mean test ROC-AUC interval lies above 0.5 and that scores at least as well as the current champion on "
        "the same test rows."
    ),
)
def engagement_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: Warehouse, tracking: Tracking
) -> dg.MaterializeResult:
    with warehouse.connect(log=context.log) as con:  # released before training starts
        data = load_dataset(con)
    context.log.info(
        f"{len(data.matrix):,} classifications, {len(data.matrix.feature_names)} features, horizons {data.horizons}"
    )
    progress = {}  # how far training got: the registered version, the gate's decision
    with outage.said_plainly(tracking, context.log, lambda uri, why: outage.outage_message(uri, why, progress)):
        result = run_training(data, config, tracking, log=context.log, progress=progress)
    return dg.MaterializeResult(metadata=asset_metadata(result))


def asset_metadata(result: TrainingResult) -> dict:
    promotion = result.promotion
    metrics = result.metrics
    per_horizon = {}
    for w in result.horizons:
        per_horizon[f"test_roc_auc_{w}m"] = rounded(metrics.get(f"test_roc_auc_{w}m"))
        if w in result.lift:
            per_horizon[f"lift_{w}m"] = f"LSTM {result.lift[w]}"
    return {
        "mlflow_run": dg.MetadataValue.url(result.run_url),
        "mlflow_run_id": result.run_id,
        "tracking_uri": result.tracking_uri,
        "registered_version": result.version,
        "champion_decision": promotion.reason,
        "promoted": promotion.promoted,
        "gate_failed_closed": promotion.failed_closed,
        "new_mean_test_roc_auc": rounded(promotion.new_score),
        "new_mean_test_roc_auc_95ci": f"[{promotion.new_ci_low:.4f}, {promotion.new_ci_high:.4f}]",
        "champion_mean_test_roc_auc": rounded(promotion.champion_score),
        "training_seconds": dg.MetadataValue.float(round(result.seconds, 1)),
        "epochs_run": len(result.history) - 1,
        "training_budget": result.budget,
        "early_stopping": result.stopping,
        "baselines_dropped_features": ", ".join(result.dropped_features) or "none",
        "one_outcome_horizons": "; ".join(f"{w}m: {t}" for w, t in result.degenerate_horizons.items()) or "none",
        "comparison": dg.MetadataValue.md(result.comparison),
        "roc_curves": dg.MetadataValue.md(png_markdown("roc", result.plots["roc"])),
        "calibration": dg.MetadataValue.md(png_markdown("calibration", result.plots["calibration"])),
        **per_horizon,
    }
