"""Training: time split, the LSTM, honest baselines, metrics, MLflow, promotion.

`engagement_model` (the asset) is a thin shell: it reads `features` and
`labels` from the warehouse (holding the connection only for the read), calls
`run_training`, and reports metadata. Everything else is a plain function:

    load_dataset      features -> FeatureMatrix, labels -> [N, H] (NaN = unknown)
    time_split        70/15/15 on created_at, purging labels that peek into the next period
    train_lstm        mini-batches of windows gathered by index, AdamW, early stopping
    fit_baselines     base rate, logistic regression, gradient-boosted trees, random forest
    evaluate          sklearn metrics for every model and horizon on the same test rows
    promote           champion alias moves only for a model at least as good on these rows

torch, sklearn, mlflow and matplotlib are imported inside the functions that
use them: this module is imported by definitions.py, which must load fast.
"""

import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from engagement_pipeline.drift import drift_reference_for, log_drift_reference
from engagement_pipeline.resources import CHAMPION_ALIAS, Tracking, Warehouse
from engagement_pipeline.scoring import champion_version, load_model
from engagement_pipeline.windows import FeatureMatrix, gather_windows, load_feature_matrix

if TYPE_CHECKING:
    from engagement_pipeline.model import EngagementLSTM, Scaling

BASELINES = ("base_rate", "logistic", "gbdt", "random_forest")
MODEL_PREFIX = {"lstm": "", **{name: f"{name}_" for name in BASELINES}}
MICROS_PER_MINUTE = 60_000_000
# A label at t for horizon W is decided by data up to t + 2W, not t + W: a
# "stops" label needs the session's last classification e < t + W *and* W
# minutes of silence after it (CONTRACT.md: data_end - e >= W).
LABEL_LOOKAHEAD_HORIZONS = 2


class TrainingConfig(dg.Config):
    """Run config of `engagement_model`. Defaults train the demo (~150k classifications) in ~2 minutes on 2 cores.

    Every field carries its description, which the Dagster launchpad shows.
    """

    window: int = Field(
        20, description="K: classifications per window (the current one and up to K-1 earlier ones of the same user)."
    )
    epochs: int = Field(
        6, description="Most epochs after the linear start (epoch 0); early stopping usually ends sooner."
    )
    patience: int = Field(2, description="Epochs without a lower validation loss before training stops.")
    batch_size: int = Field(256, description="Windows per optimizer step.")
    lr: float = Field(1e-3, description="AdamW learning rate.")
    weight_decay: float = Field(0.05, description="AdamW weight decay.")
    hidden_size: int = Field(32, description="LSTM hidden units per layer.")
    num_layers: int = Field(2, description="Stacked LSTM layers.")
    dropout: float = Field(0.3, description="Dropout between LSTM layers and in the head.")
    seed: int = Field(0, description="Seed for numpy and torch: the same data and seed train the same model.")
    train_fraction: float = Field(0.70, description="Share of the time line (by created_at) used for training.")
    val_fraction: float = Field(
        0.15, description="Share used for validation (early stopping); the rest is the test period."
    )
    max_train_examples: int | None = Field(
        None,
        description="Training examples drawn afresh for each epoch (null = all of them, reshuffled). All by default: "
        "since the history enters as differences from the current step it no longer overfits within an epoch, and "
        "full epochs reached a lower validation loss than 30k-example ones on the sample.",
    )
    max_val_examples: int = Field(
        40_000, description="Fixed random subset of the validation period used for early stopping."
    )
    max_wide_examples: int = Field(
        300_000, description="Training rows used to fit the linear (logistic) path before the LSTM trains."
    )
    wide_l2: float = Field(1e-4, description="L2 penalty of the linear path's L-BFGS fit.")
    wide_lr_factor: float = Field(
        0.1, description="The linear path's learning rate, relative to `lr`, once the LSTM trains with it."
    )
    forest_max_train_rows: int = Field(
        100_000, description="Training rows for the random-forest baseline (100 trees, depth 10)."
    )
    device: str = Field("auto", description='"auto" = CUDA when present, else CPU; or "cpu", "cuda".')
    torch_threads: int = Field(
        1,
        description="Intra-op threads (0 = every core). 1 by default: a small LSTM batch gains little from more, and "
        "with another busy process on a 2-core machine 2 threads ran 10x slower than 1 (spinning).",
    )


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    matrix: FeatureMatrix
    horizons: list[int]
    labels: np.ndarray  # float32 [N, H]: 1 continues, 0 stops, NaN unknown (censored / unlabelled)


def load_labels(con, classification_id: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Pivot `labels` to [N, H] aligned with `classification_id`, NaN where no label, in SQL + searchsorted."""
    horizons = [h for (h,) in con.execute("select distinct horizon_minutes from labels order by 1").fetchall()]
    pivot = ", ".join(f"max(continues::float) filter (where horizon_minutes = ?) as h{i}" for i in range(len(horizons)))
    table = con.sql(
        f"select classification_id, {pivot} from labels group by classification_id order by classification_id",
        params=horizons,
    ).to_arrow_table()
    ids = table.column("classification_id").to_numpy()
    labels = np.full((len(classification_id), len(horizons)), np.nan, dtype=np.float32)
    if len(ids):
        at = np.clip(np.searchsorted(ids, classification_id), 0, len(ids) - 1)
        found = ids[at] == classification_id
        for i in range(len(horizons)):
            labels[found, i] = table.column(f"h{i}").to_numpy()[at[found]]
    return horizons, labels


def load_dataset(con) -> Dataset:
    matrix = load_feature_matrix(con)
    horizons, labels = load_labels(con, matrix.classification_id)
    return Dataset(matrix, horizons, labels)


@dataclass(frozen=True)
class Split:
    """Row indices of the three periods, and the labels after purging look-ahead across period boundaries."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_start_us: int
    test_start_us: int
    labels: np.ndarray  # [N, H]


def time_split(
    created_at: np.ndarray, labels: np.ndarray, horizons: list[int], train_fraction: float, val_fraction: float
) -> Split:
    """Split labelled rows by created_at quantiles; purge labels that see into the next period.

    A train label for horizon W at time t is kept only if t + 2W <= the start of
    validation (see LABEL_LOOKAHEAD_HORIZONS), and likewise validation against
    test; purging is per horizon, and a row with no label left is dropped.
    Windows may still look back into earlier periods: that is legitimate history.
    """
    labelled = ~np.isnan(labels).all(axis=1)
    if labelled.sum() < 3:
        raise ValueError("fewer than 3 labelled classifications: nothing to split")
    val_start, test_start = np.quantile(created_at[labelled], [train_fraction, train_fraction + val_fraction])
    val_start, test_start = int(val_start), int(test_start)
    lookahead = LABEL_LOOKAHEAD_HORIZONS * np.asarray(horizons, dtype=np.int64) * MICROS_PER_MINUTE
    reaches = created_at[:, None] + lookahead[None, :]
    in_train = created_at < val_start
    in_val = (created_at >= val_start) & (created_at < test_start)
    purge = (in_train[:, None] & (reaches > val_start)) | (in_val[:, None] & (reaches > test_start))
    labels = np.where(purge, np.nan, labels).astype(np.float32)
    known = ~np.isnan(labels).all(axis=1)
    return Split(
        train=np.flatnonzero(in_train & known),
        val=np.flatnonzero(in_val & known),
        test=np.flatnonzero((created_at >= test_start) & known),
        val_start_us=val_start,
        test_start_us=test_start,
        labels=labels,
    )


# --------------------------------------------------------------------------- the LSTM


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def set_threads(threads: int) -> None:
    """Set torch's intra-op threads (0 = the cores this process may run on, never more)."""
    import torch

    torch.set_num_threads(threads if threads > 0 else max(1, len(os.sched_getaffinity(0))))


def batches(matrix: FeatureMatrix, labels: np.ndarray, rows: np.ndarray, window: int, batch_size: int):
    """Yield (windows [B, K, F], labels [B, H]) for `rows` in order, gathered by index per batch."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        yield gather_windows(matrix, chunk, window), labels[chunk]


def train_epoch(model, optimizer, batch_iter, device: str) -> float:
    """One pass of masked-BCE AdamW steps; returns the example-weighted mean loss."""
    import torch

    from engagement_pipeline.model import masked_bce

    model.train()
    total, count = 0.0, 0
    for x, y in batch_iter:
        x = torch.from_numpy(x).to(device, non_blocking=True)
        y = torch.from_numpy(y).to(device, non_blocking=True)
        loss = masked_bce(model.logits(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total += loss.item() * len(x)
        count += len(x)
    return total / max(count, 1)


def predict(model, matrix: FeatureMatrix, rows: np.ndarray, window: int, device: str, batch_size: int = 4096):
    """P(continue) [len(rows), H] from the in-process model (eval mode, no grad)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in batches(matrix, np.empty((len(matrix), 0), np.float32), rows, window, batch_size):
            out.append(model(torch.from_numpy(x).to(device)).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def train_lstm(
    matrix: FeatureMatrix,
    split: Split,
    scaling: "Scaling",
    n_horizons: int,
    config: TrainingConfig,
    on_epoch: Callable[[dict], None] = lambda row: None,
) -> tuple["EngagementLSTM", list[dict]]:
    """Fit the LSTM with early stopping on validation loss; returns the best-epoch model (on CPU) and history.

    First the linear path is fitted alone (a logistic regression on the current
    row, see model.fit_wide) and scored as epoch 0; then the whole network
    trains with AdamW, the linear path at a tenth of the rate. The model kept
    is the best on validation loss, so the history path is only kept when it
    actually helps on later data than it was trained on.
    """
    import torch

    from engagement_pipeline.model import EngagementLSTM, fit_wide, masked_bce

    started = time.perf_counter()
    device = pick_device(config.device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    model = EngagementLSTM(
        len(matrix.feature_names), n_horizons, scaling, config.hidden_size, config.num_layers, config.dropout
    ).to(device)
    wide_rows = np.sort(rng.permutation(split.train)[: config.max_wide_examples])
    wide_loss = fit_wide(
        model,
        torch.from_numpy(matrix.X[wide_rows]).to(device),
        torch.from_numpy(split.labels[wide_rows]).to(device),
        l2=config.wide_l2,
    )
    deep = [p for name, p in model.named_parameters() if not name.startswith("linear.")]
    optimizer = torch.optim.AdamW(
        [{"params": deep}, {"params": model.linear.parameters(), "lr": config.lr * config.wide_lr_factor}],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    val_rows = np.sort(rng.permutation(split.val)[: config.max_val_examples])
    y_val = split.labels[val_rows]
    per_epoch = min(len(split.train), config.max_train_examples or len(split.train))

    def validation_loss() -> tuple[float, np.ndarray]:
        p_val = predict(model, matrix, val_rows, config.window, device)
        with torch.no_grad():
            logits = torch.logit(torch.from_numpy(p_val).clamp(1e-6, 1 - 1e-6))
            return masked_bce(logits, torch.from_numpy(y_val)).item(), p_val

    def record(epoch: int, train_loss: float, seconds: float) -> float:
        val_loss, p_val = validation_loss()
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "seconds": seconds}
        row.update({f"val_roc_auc_{i}": roc_auc_or_nan(y_val[:, i], p_val[:, i]) for i in range(n_horizons)})
        history.append(row)
        on_epoch(row)
        return val_loss

    # epoch 0 is the starting point, the linear path alone: it competes with every later epoch
    history: list[dict] = []
    best_loss = record(0, wide_loss, time.perf_counter() - started)
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    stale = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        rows = rng.choice(split.train, size=per_epoch, replace=False)
        train_loss = train_epoch(
            model, optimizer, batches(matrix, split.labels, rows, config.window, config.batch_size), device
        )
        scheduler.step()
        val_loss = record(epoch, train_loss, time.perf_counter() - started)
        if val_loss < best_loss - 1e-5:
            best_loss, stale = val_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    return model.cpu().eval(), history


# --------------------------------------------------------------------------- baselines


def fit_baselines(
    X: np.ndarray, labels: np.ndarray, split: Split, scaling: "Scaling", config: TrainingConfig
) -> dict[str, np.ndarray]:
    """Fit each baseline per horizon on the train rows' current-classification features; P(continue) on test rows.

    Gradient-boosted trees see raw features (NaN handled natively) and stop
    early on the same validation period as the LSTM; logistic regression and
    the forest see the LSTM's own preprocessing (scaled, missing indicators).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from engagement_pipeline.model import preprocess_tabular

    tab = {part: preprocess_tabular(X[getattr(split, part)], scaling) for part in ("train", "val", "test")}
    raw = {part: X[getattr(split, part)] for part in ("train", "val", "test")}
    rng = np.random.default_rng(config.seed)
    n_test, n_h = len(split.test), labels.shape[1]
    out = {name: np.full((n_test, n_h), np.nan, dtype=np.float32) for name in BASELINES}
    for h in range(n_h):
        y_train = labels[split.train, h]
        known = ~np.isnan(y_train)
        y = y_train[known].astype(int)
        out["base_rate"][:, h] = y.mean() if len(y) else 0.5
        if len(np.unique(y)) < 2:
            out["logistic"][:, h] = out["gbdt"][:, h] = out["random_forest"][:, h] = out["base_rate"][:, h]
            continue
        logistic = LogisticRegression(C=1.0, max_iter=2000).fit(tab["train"][known], y)
        out["logistic"][:, h] = logistic.predict_proba(tab["test"])[:, 1]

        y_val_all = labels[split.val, h]
        val_known = ~np.isnan(y_val_all)
        gbdt_val = (
            {"X_val": raw["val"][val_known], "y_val": y_val_all[val_known].astype(int)}
            if len(np.unique(y_val_all[val_known])) == 2
            else {}
        )
        gbdt = HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=1000,
            max_leaf_nodes=63,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=True,
            n_iter_no_change=30,
            validation_fraction=None if gbdt_val else 0.1,
            random_state=config.seed,
        ).fit(raw["train"][known], y, **gbdt_val)
        out["gbdt"][:, h] = gbdt.predict_proba(raw["test"])[:, 1]

        forest_rows = np.flatnonzero(known)
        if len(forest_rows) > config.forest_max_train_rows:
            forest_rows = np.sort(rng.choice(forest_rows, config.forest_max_train_rows, replace=False))
        forest = RandomForestClassifier(
            n_estimators=100, max_depth=10, min_samples_leaf=5, n_jobs=2, random_state=config.seed
        ).fit(tab["train"][forest_rows], y_train[forest_rows].astype(int))
        out["random_forest"][:, h] = forest.predict_proba(tab["test"])[:, 1]
    return out


# --------------------------------------------------------------------------- metrics


def roc_auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC over the known labels (NaN skipped), NaN when a class is absent."""
    from sklearn.metrics import roc_auc_score

    known = ~np.isnan(y)
    y, p = y[known], p[known]
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Binned ECE: sum over equal-width bins of (bin share) * |mean predicted - observed rate|."""
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, p, n_bins) - np.bincount(bins, y, n_bins))
    return float(gap.sum() / max(count.sum(), 1))


def stop_precision_at(y: np.ndarray, p_continue: np.ndarray, fraction: float) -> float:
    """Among the `fraction` of examples judged most likely to stop, the share that did stop."""
    k = max(1, int(round(fraction * len(y))))
    most_likely_to_stop = np.argsort(p_continue, kind="stable")[:k]
    return float(1.0 - y[most_likely_to_stop].mean())


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The per-horizon test metrics of one model (y: 1 = continues; p: P(continue))."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

    two_classes = len(np.unique(y)) == 2
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return {
        "roc_auc": roc_auc_or_nan(y, p),
        "pr_auc": float(average_precision_score(y, p)) if two_classes else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
        "stop_precision_top1pct": stop_precision_at(y, p, 0.01),
        "stop_precision_top5pct": stop_precision_at(y, p, 0.05),
    }


def evaluate(
    predictions: dict[str, np.ndarray],
    y_test: np.ndarray,
    horizons: list[int],
    history_length: np.ndarray,
    new_user: np.ndarray,
) -> dict[str, float]:
    """Metrics of every model and horizon on the same test rows, under CONTRACT names ({prefix}test_{metric}_{W}m).

    Beyond the contract's roc_auc / pr_auc / brier: log loss, ECE, stop
    precision at 1% and 5%, ROC-AUC on users never seen in training and on
    the lowest / highest quartile of history length.
    """
    metrics = {}
    for h, minutes in enumerate(horizons):
        known = ~np.isnan(y_test[:, h])
        y = y_test[known, h]
        if not len(y):
            continue
        hist = history_length[known]
        short, long_ = hist <= np.quantile(hist, 0.25), hist >= np.quantile(hist, 0.75)
        for name, p_all in predictions.items():
            p = p_all[known, h]
            values = binary_metrics(y, p)
            values["roc_auc_new_users"] = roc_auc_or_nan(y[new_user[known]], p[new_user[known]])
            values["roc_auc_short_history"] = roc_auc_or_nan(y[short], p[short])
            values["roc_auc_long_history"] = roc_auc_or_nan(y[long_], p[long_])
            metrics.update({f"{MODEL_PREFIX[name]}test_{m}_{minutes}m": v for m, v in values.items()})
    return metrics


def metrics_table(metrics: dict[str, float], horizons: list[int]) -> "pandas.DataFrame":  # noqa: F821
    """One row per (model, horizon), one column per metric."""
    import pandas as pd

    rows = []
    for name, prefix in MODEL_PREFIX.items():
        for minutes in horizons:
            suffix = f"_{minutes}m"
            head = f"{prefix}test_"
            values = {
                key[len(head) : -len(suffix)]: value
                for key, value in metrics.items()
                if key.startswith(head) and key.endswith(suffix)
            }
            if values:
                rows.append({"model": name, "horizon_minutes": minutes, **values})
    return pd.DataFrame(rows)


def comparison_markdown(metrics: dict[str, float], horizons: list[int]) -> str:
    """Test ROC-AUC / PR-AUC / Brier, model by horizon, as a markdown table."""
    lines = ["| model | " + " | ".join(f"ROC-AUC {w}m | PR-AUC {w}m | Brier {w}m" for w in horizons) + " |"]
    lines.append("| --- " * (1 + 3 * len(horizons)) + "|")
    for name, prefix in MODEL_PREFIX.items():
        cells = [
            f"{metrics.get(f'{prefix}test_{m}_{w}m', float('nan')):.4f}"
            for w in horizons
            for m in ("roc_auc", "pr_auc", "brier")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def plot_png(kind: str, predictions: dict[str, np.ndarray], y_test: np.ndarray, horizons: list[int]) -> bytes:
    """ROC ('roc'), precision-recall ('pr') or reliability ('calibration') curves, one panel per horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, axes = plt.subplots(1, len(horizons), figsize=(4.5 * len(horizons), 4), squeeze=False)
    for h, (ax, minutes) in enumerate(zip(axes[0], horizons)):
        known = ~np.isnan(y_test[:, h])
        y = y_test[known, h]
        for name, p_all in predictions.items():
            p = p_all[known, h]
            if kind == "roc" and len(np.unique(y)) == 2:
                fpr, tpr, _ = roc_curve(y, p)
                ax.plot(fpr, tpr, label=name)
            elif kind == "pr" and len(np.unique(y)) == 2:
                precision, recall, _ = precision_recall_curve(y, p)
                ax.plot(recall, precision, label=name)
            elif kind == "calibration" and name != "base_rate":
                observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
                ax.plot(predicted, observed, marker="o", label=name)
        if kind in ("roc", "calibration"):
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        labels = {"roc": ("false positive rate", "true positive rate"), "pr": ("recall", "precision")}
        xlabel, ylabel = labels.get(kind, ("mean predicted P(continue)", "observed rate"))
        ax.set(title=f"{minutes} min", xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


# --------------------------------------------------------------------------- registry and promotion


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    version: str
    new_score: float
    champion_version: str | None = None
    champion_score: float | None = None


def mean_auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.nanmean([roc_auc_or_nan(y[:, h], p[:, h]) for h in range(y.shape[1])]))


def champion_predictions(
    client, model_name: str, matrix: FeatureMatrix, rows: np.ndarray, horizons: list[int]
) -> tuple[str | None, np.ndarray | None, list[int], str]:
    """Run the current champion on `rows` of this run's data.

    Returns (champion version or None, P [len(rows), len(common horizons)] or
    None when it cannot be evaluated, the horizon columns of the new model it
    covers, a note). A champion with a different window is fed windows of its
    own length. One trained on other features than today's `features` table
    cannot be evaluated here, and cannot score either (scoring needs the same
    features): it is no longer a usable champion.
    """
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None, None, [], "no champion yet"
    number = str(version.version)
    try:
        expects = champion_version(model_name, version)
    except (KeyError, ValueError) as error:
        return number, None, [], f"champion v{number} lacks compatibility tags ({error})"
    window, champion_horizons = expects.window, expects.horizons
    common = [h for h in champion_horizons if h in horizons]
    if expects.feature_names != matrix.feature_names or not common:
        why = "no horizon in common"
        if expects.feature_names != matrix.feature_names:
            why = "it was trained on other features than the current table"
        return number, None, [], f"champion v{number} cannot be evaluated (or used for scoring) here: {why}"
    champion = load_model(expects)  # pinned by version: the alias may move meanwhile
    p = np.concatenate(
        [champion.predict(gather_windows(matrix, rows[i : i + 4096], window)) for i in range(0, len(rows), 4096)]
    )
    p = p[:, [champion_horizons.index(h) for h in common]]
    return number, p, [horizons.index(h) for h in common], f"champion v{number} evaluated"


def promotion_rule(new_score: float, champion_score: float | None) -> bool:
    """The new model takes the alias when there is no comparable champion or it scores at least as well."""
    return champion_score is None or not np.isfinite(champion_score) or new_score >= champion_score


def promote(
    client,
    model_name: str,
    version: str,
    matrix: FeatureMatrix,
    rows: np.ndarray,
    y_test: np.ndarray,
    p_new: np.ndarray,
    horizons: list[int],
) -> Promotion:
    """Compare the new version with the champion on the same test rows (mean ROC-AUC over common horizons)."""
    champion_version, p_champion, columns, note = champion_predictions(client, model_name, matrix, rows, horizons)
    if p_champion is not None:
        new_score = mean_auc(y_test[:, columns], p_new[:, columns])
        champion_score = mean_auc(y_test[:, columns], p_champion)
    else:
        new_score, champion_score = mean_auc(y_test, p_new), None
    promoted = promotion_rule(new_score, champion_score)
    if champion_version is None:
        reason = "first model: becomes champion"
    elif champion_score is None:
        reason = f"{note}; promoted, since an unusable champion would stop the nightly scoring"
    else:
        verdict = "promoted" if promoted else "kept the champion"
        reason = f"{note}: mean test ROC-AUC {new_score:.4f} vs champion {champion_score:.4f}, {verdict}"
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(promoted, reason, version, new_score, champion_version, champion_score)


# --------------------------------------------------------------------------- the whole run


@dataclass
class TrainingResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    version: str
    promotion: Promotion
    metrics: dict[str, float]
    horizons: list[int]
    history: list[dict]
    seconds: float
    comparison: str
    test_predictions: np.ndarray = field(repr=False)  # the LSTM's P(continue) on split.test rows, in order
    plots: dict[str, bytes] = field(repr=False, default_factory=dict)

    @property
    def run_url(self) -> str:
        return f"http://127.0.0.1:5000/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def log_lstm(model, example: np.ndarray, n_horizons: int):
    """Log the LSTM to the active run as an MLflow model, exported with torch.export ("pt2").

    pt2 on purpose: loading it runs no pickle of our classes, so any process
    with torch + mlflow can serve it without this package. The signature fixes
    K and F (both are fixed per model); the batch dimension stays dynamic, which
    needs an input example with at least 2 rows.
    """
    import mlflow
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    if len(example) < 2:  # torch.export would specialize a size-1 batch dimension to a constant
        example = np.concatenate([example, example])
    _, window, n_features = example.shape
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, window, n_features))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_horizons))]),
    )
    return mlflow.pytorch.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        serialization_format="pt2",
        # pinned explicitly: inferring requirements would load the model again in a subprocess
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy"],
    )


def model_card(config: TrainingConfig, data: Dataset, split: Split, comparison: str, promotion: Promotion) -> str:
    fmt = lambda us: str(np.datetime64(int(us), "us")) + "Z"  # noqa: E731
    return f"""# engagement-lstm v{promotion.version}

Predicts P(a volunteer is still classifying W minutes later) for W in {data.horizons} minutes,
from their last {config.window} classifications (left-padded with all-NaN rows).

- Input: float32 [B, {config.window}, {len(data.matrix.feature_names)}] raw features (NaN = missing),
  in the order of `features.json`. Output: [B, {len(data.horizons)}] probabilities, columns = horizons.
- Data: {len(data.matrix):,} classifications; train {len(split.train):,} / validation {len(split.val):,} /
  test {len(split.test):,} labelled examples. Validation from {fmt(split.val_start_us)}, test from
  {fmt(split.test_start_us)}; labels that could see into the next period were purged.
- Model: {config.num_layers}-layer LSTM, hidden {config.hidden_size}, dropout {config.dropout},
  history fed as differences from the current classification, linear skip from the current one; scaling fitted on train only.
- Promotion: {promotion.reason}.

## Test metrics (same rows for every model)

{comparison}
"""


def run_training(data: Dataset, config: TrainingConfig, tracking: Tracking, log=None) -> TrainingResult:
    """Split, train, evaluate, log to MLflow, register and promote. `log` is any logger with .info."""
    import mlflow

    from engagement_pipeline.model import fit_scaling

    say = log.info if log is not None else (lambda message: None)
    started = time.perf_counter()
    set_threads(config.torch_threads)
    matrix, horizons = data.matrix, data.horizons
    split = time_split(matrix.created_at, data.labels, horizons, config.train_fraction, config.val_fraction)
    if not len(split.train) or not len(split.test):
        raise ValueError(f"empty split: {len(split.train)} train / {len(split.test)} test examples")
    say(f"split: {len(split.train):,} train / {len(split.val):,} val / {len(split.test):,} test examples")
    scaling = fit_scaling(matrix.X[split.train])

    client = tracking.client()
    with mlflow.start_run() as run:
        mlflow.log_params({**config.model_dump(), "horizons": horizons, "n_features": len(matrix.feature_names)})
        mlflow.log_params({"n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test)})
        log_drift_reference(drift_reference_for(matrix, split.train, split.val_start_us))  # for feature_drift

        def on_epoch(row: dict) -> None:
            aucs = {f"val_roc_auc_{w}m": row[f"val_roc_auc_{h}"] for h, w in enumerate(horizons)}
            mlflow.log_metrics(
                {"train_loss": row["train_loss"], "val_loss": row["val_loss"], **aucs}, step=row["epoch"]
            )
            auc_text = ", ".join(f"val ROC-AUC {w}m {row[f'val_roc_auc_{h}']:.4f}" for h, w in enumerate(horizons))
            which = " (the linear path alone)" if row["epoch"] == 0 else ""
            say(
                f"epoch {row['epoch']}/{config.epochs}{which}: train loss {row['train_loss']:.4f}, "
                f"val loss {row['val_loss']:.4f}, {auc_text} ({row['seconds']:.1f}s)"
            )

        model, history = train_lstm(matrix, split, scaling, len(horizons), config, on_epoch)
        lstm_seconds = time.perf_counter() - started
        p_lstm = predict(model, matrix, split.test, config.window, "cpu")
        say("fitting baselines")
        baselines_started = time.perf_counter()
        predictions = {"lstm": p_lstm, **fit_baselines(matrix.X, split.labels, split, scaling, config)}
        baseline_seconds = time.perf_counter() - baselines_started

        y_test = split.labels[split.test]
        train_users = np.unique(matrix.user_start[split.train])
        new_user = ~np.isin(matrix.user_start[split.test], train_users)
        metrics = evaluate(predictions, y_test, horizons, matrix.position_in_user[split.test], new_user)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_metrics(
            {
                "lstm_training_seconds": lstm_seconds,
                "baselines_seconds": baseline_seconds,
                "test_new_user_share": float(new_user.mean()),
            }
        )

        window = config.window
        example = gather_windows(matrix, split.test[: min(8, len(split.test))], window)
        with warnings.catch_warnings():
            # torch.export notes that nn.LSTM re-assigns its flat weights while tracing: harmless here
            warnings.filterwarnings("ignore", message="The tensor attributes self.lstm._flat_weights")
            info = log_lstm(model, example, len(horizons))
        model_tags = {
            "horizons": json.dumps(horizons),
            "window": str(window),
            "feature_names": json.dumps(matrix.feature_names),
            "output": "P(continue) per horizon, columns in `horizons` order",
            "run_id": run.info.run_id,
        }
        version = str(mlflow.register_model(info.model_uri, tracking.registered_model_name, tags=model_tags).version)
        promotion = promote(
            client, tracking.registered_model_name, version, matrix, split.test, y_test, p_lstm, horizons
        )
        say(f"registered version {version}: {promotion.reason}")
        mlflow.set_tags({"registered_version": version, "champion_decision": promotion.reason})
        mlflow.log_metrics(
            {"promotion_new_mean_test_roc_auc": promotion.new_score, "promoted": float(promotion.promoted)}
            | (
                {"promotion_champion_mean_test_roc_auc": promotion.champion_score}
                if promotion.champion_score is not None
                else {}
            )
        )

        comparison = comparison_markdown(metrics, horizons)
        plots = {kind: plot_png(kind, predictions, y_test, horizons) for kind in ("roc", "pr", "calibration")}
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            for kind, png in plots.items():
                (root / f"{kind}.png").write_bytes(png)
            table = metrics_table(metrics, horizons)
            table.to_csv(root / "metrics.csv", index=False)
            (root / "metrics.md").write_text(frame_markdown(table))
            (root / "features.json").write_text(
                json.dumps(
                    {
                        "feature_names": matrix.feature_names,
                        "window": window,
                        "horizons": horizons,
                        "scaling": scaling.to_json(matrix.feature_names),
                    },
                    indent=2,
                )
            )
            card = model_card(config, data, split, comparison, promotion)
            (root / "model_card.md").write_text(card)
            mlflow.log_artifacts(folder)
        client.update_model_version(tracking.registered_model_name, version, description=card)
    return TrainingResult(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        tracking_uri=tracking.uri(),
        version=version,
        promotion=promotion,
        metrics=metrics,
        horizons=horizons,
        history=history,
        seconds=time.perf_counter() - started,
        comparison=comparison,
        test_predictions=p_lstm,
        plots=plots,
    )


def frame_markdown(frame) -> str:
    """A DataFrame as a markdown table (pandas' to_markdown needs the optional `tabulate`)."""
    cells = frame.map(lambda v: f"{v:.4f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.to_numpy().tolist()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the asset


def png_markdown(name: str, png: bytes) -> dg.MetadataValue:
    import base64

    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")


@dg.asset(
    name="engagement_model",
    deps=[dg.AssetKey("features"), dg.AssetKey("labels")],
    group_name="training",
    kinds={"pytorch", "mlflow"},
    owners=["team:engagement"],
    description=(
        "Trains the LSTM over each volunteer's last K classifications (with base-rate, logistic, "
        "gradient-boosted and random-forest baselines on the same time split), logs everything to "
        "MLflow, registers `engagement-lstm` and moves the `champion` alias only to a model at least "
        "as good as the current champion on the same test rows."
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
    result = run_training(data, config, tracking, log=context.log)
    promotion = result.promotion
    lstm_auc = {
        f"test_roc_auc_{w}m": dg.MetadataValue.float(result.metrics.get(f"test_roc_auc_{w}m", float("nan")))
        for w in result.horizons
    }
    return dg.MaterializeResult(
        metadata={
            "mlflow_run": dg.MetadataValue.url(result.run_url),
            "mlflow_run_id": result.run_id,
            "tracking_uri": result.tracking_uri,
            "registered_version": result.version,
            "champion_decision": promotion.reason,
            "promoted": promotion.promoted,
            "new_mean_test_roc_auc": dg.MetadataValue.float(promotion.new_score),
            "champion_mean_test_roc_auc": dg.MetadataValue.float(
                promotion.champion_score if promotion.champion_score is not None else float("nan")
            ),
            "training_seconds": dg.MetadataValue.float(result.seconds),
            "epochs_run": len(result.history),
            "comparison": dg.MetadataValue.md(result.comparison),
            "roc_curves": png_markdown("roc", result.plots["roc"]),
            "calibration": png_markdown("calibration", result.plots["calibration"]),
            **lstm_auc,
        }
    )
