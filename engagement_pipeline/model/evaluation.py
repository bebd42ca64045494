"""Evaluation: test metrics of every model with volunteer-level bootstrap intervals, the lift, tables, the card.

Every metric is computed from row weights, so one implementation gives both
the point estimate (every weight 1) and each bootstrap resample (weights =
how many times the row's volunteer was drawn). Resampling volunteers rather
than rows is what makes the interval honest: a volunteer's classifications
are not independent of each other. All resamples of a run share one count
matrix, so intervals of differences (the lift of the LSTM over a baseline,
the gate's mean ROC-AUC) are paired.

    bootstrap.py        the resamples (multinomial volunteer counts [B, U]), every metric per resample from
                        per-volunteer score histograms, the percentile interval
    weighted_*          ROC-AUC (rank-based, ties count half), average precision, Brier, log loss, ECE,
                        stop precision for a [B, n] weight matrix, no loop over rows: the exact point
                        estimates, and the row-level reference the binned resamples are tested against
    auc_with_interval   one ROC-AUC with its volunteer interval (the realized-quality check's statistic)
    evaluate            every model x horizon x metric under CONTRACT names, with _ci_low / _ci_high,
                        and lift_roc_auc_{W}m of the LSTM over the best baseline
    markdown_table      the one markdown table helper of the package (scoring uses it too)
    lift_sentences      "better than logistic by 0.012 [0.004, 0.020]" per horizon
    model_card          the registered version's description

Only numpy at import time (scipy.sparse inside the bootstrap, pandas inside `metrics_frame`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engagement_pipeline.model.bootstrap import (
    DEFAULT_RESAMPLES,
    Resamples,
    interval,
    resampled_metrics,
    resampled_roc_auc,
)

BASELINES = ("base_rate", "logistic", "gbdt", "random_forest")
MODEL_PREFIX = {"lstm": "", **{name: f"{name}_" for name in BASELINES}}


def ones(n: int) -> np.ndarray:
    """The point estimate's weights: every row once (float64, so point values match scikit-learn's exactly)."""
    return np.ones((1, n), dtype=np.float64)


# --------------------------------------------------------------------------- weighted metrics, [B, n] weights


def group_ends(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in a sorted array."""
    n = len(sorted_values)
    return np.flatnonzero(np.r_[sorted_values[1:] != sorted_values[:-1], True]) if n else np.zeros(0, np.int64)


def prefix_sums(values: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sums (numpy, in row order: the same result on any machine and load)."""
    return np.cumsum(values, axis=1)


def at_groups(values: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise over [B, n] values sorted by score: (sum within each tie group, sum before it), both [B, G]."""
    cumulative = prefix_sums(values)
    if len(ends) == values.shape[1]:  # no ties: each row is its own group
        return values, cumulative - values
    at_end = cumulative[:, ends]
    before = np.zeros_like(at_end)
    before[:, 1:] = at_end[:, :-1]
    return at_end - before, before


def rank_sums(y: np.ndarray, W: np.ndarray, ends: np.ndarray):
    """Per tie group: positive weight in it, positive weight below it, all weight in it and below it [B, G]."""
    pos_in, pos_below = at_groups(W * y, ends)
    all_in, all_below = at_groups(W, ends)
    return pos_in, pos_below, all_in, all_below


def sorted_metrics(y: np.ndarray, p: np.ndarray, W: np.ndarray, ends: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric per row of W [B, n]; y, p and W's columns sorted by p ascending; `ends` = group_ends(p).

    Two cumulative sums serve every ranking metric: ROC-AUC counts, for each
    positive, the weight of negatives scored below it (ties half); average
    precision walks the same tie groups from the top (precision at a
    threshold = positives above it / all above it); stop precision takes the
    lowest scores. Brier, log loss and ECE are weighted means.
    """
    pos_in, pos_below, all_in, all_below = rank_sums(y, W, ends)
    neg_in, neg_below = all_in - pos_in, all_below - pos_below
    total = W.sum(1, dtype=np.float64)
    n_pos = pos_in.sum(1, dtype=np.float64)
    n_neg = total - n_pos
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        wins = (pos_in * (neg_below + 0.5 * neg_in)).sum(1, dtype=np.float64)
        out["roc_auc"] = np.where(n_pos * n_neg > 0, wins / (n_pos * n_neg), np.nan)
        at_or_above = total.astype(W.dtype)[:, None] - all_below
        positives_at_or_above = n_pos.astype(W.dtype)[:, None] - pos_below
        precision = positives_at_or_above / np.maximum(at_or_above, W.dtype.type(1e-12))
        out["pr_auc"] = np.where(n_pos > 0, (pos_in * precision).sum(1, dtype=np.float64) / n_pos, np.nan)
        q = np.clip(p, 1e-7, 1 - 1e-7)
        out["brier"] = (W @ ((p - y) ** 2).astype(W.dtype)) / total
        out["log_loss"] = (W @ (-(y * np.log(q) + (1 - y) * np.log1p(-q))).astype(W.dtype)) / total
        bins = np.clip((p * 10).astype(int), 0, 9)
        onehot = np.zeros((len(p), 10), dtype=W.dtype)
        onehot[np.arange(len(p)), bins] = (p - y).astype(W.dtype)
        out["ece"] = np.abs(W @ onehot).sum(1) / total
        # stop precision: the lowest-scored prefix whose weight before each row is under fraction x total
        for fraction, name in ((0.01, "stop_precision_top1pct"), (0.05, "stop_precision_top5pct")):
            out[name] = lowest_prefix_stop_share(y, W, fraction, total)
    return out


def lowest_prefix_stop_share(y: np.ndarray, W: np.ndarray, fraction: float, total: np.ndarray) -> np.ndarray:
    """Share of stops (y = 0) among the lowest-scored rows that make up `fraction` of each row of W's weight."""
    k = np.maximum(1.0, np.round(fraction * total))
    cumulative = prefix_sums(W)
    chosen = np.where(cumulative - W < k[:, None], W, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (chosen * (1 - y)).sum(1) / chosen.sum(1)


def all_metrics(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """The per-horizon test metrics of one model (y: 1 = continues; p: P(continue)), one value per row of W."""
    order = np.argsort(p, kind="stable")
    y, p = y[order].astype(W.dtype), p[order].astype(np.float64)
    return sorted_metrics(y, p, W[:, order], group_ends(p))


def sorted_roc_auc(y: np.ndarray, p: np.ndarray, W: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """ROC-AUC alone per row of W, inputs sorted as for `sorted_metrics`."""
    pos_in, pos_below, all_in, all_below = rank_sums(y, W, ends)
    n_pos = pos_in.sum(1, dtype=np.float64)
    pairs = n_pos * (W.sum(1, dtype=np.float64) - n_pos)
    neg_term = (all_below - pos_below) + 0.5 * (all_in - pos_in)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (pos_in * neg_term).sum(1, dtype=np.float64) / pairs, np.nan)


def weighted_roc_auc(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC per row of W [B, n]: P(score of a positive > a negative), ties counting half (= scikit-learn's)."""
    order = np.argsort(p, kind="stable")
    return sorted_roc_auc(y[order].astype(W.dtype), p[order], W[:, order], group_ends(p[order]))


def stop_precision_at(y: np.ndarray, p_continue: np.ndarray, fraction: float) -> float:
    """Among the `fraction` of examples judged most likely to stop, the share that did stop."""
    k = max(1, int(round(fraction * len(y))))
    return float(1.0 - y[np.argsort(p_continue, kind="stable")[:k]].mean())


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Point estimates of `all_metrics` (every row weight 1)."""
    return {name: float(v[0]) for name, v in all_metrics(y, p, ones(len(y))).items()}


def roc_auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC over the known labels (NaN skipped), NaN when a class is absent."""
    known = ~np.isnan(y)
    return float(weighted_roc_auc(y[known], p[known], ones(int(known.sum())))[0])


def expected_calibration_error(y: np.ndarray, p: np.ndarray) -> float:
    """Binned ECE over 10 equal-width bins: sum over bins of |sum predicted - sum observed| / examples."""
    return binary_metrics(y, p)["ece"]


def mean_auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.nanmean([roc_auc_or_nan(y[:, h], p[:, h]) for h in range(y.shape[1])]))


def mean_auc_with_interval(y: np.ndarray, p: np.ndarray, resamples: Resamples) -> tuple[float, tuple[float, float]]:
    """Mean over horizons of test ROC-AUC, and its bootstrap interval (the promotion gate's number)."""
    point, samples = [], []
    for h in range(y.shape[1]):
        known = np.flatnonzero(~np.isnan(y[:, h]))
        yk, pk = y[known, h], p[known, h]
        point.append(weighted_roc_auc(yk, pk, ones(len(known)))[0])
        samples.append(resampled_roc_auc(resamples, known, yk, pk))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample (or a horizon) with one outcome: NaN, skipped
        return float(np.nanmean(point)), interval(np.nanmean(np.stack(samples), axis=0))


def auc_with_interval(
    y: np.ndarray, p: np.ndarray, volunteer: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """(ROC-AUC, low, high) over the rows with a known label, the interval from resampling volunteers.

    NaN for all three when one outcome is missing.
    """
    known = ~np.isnan(y)
    y, p, volunteer = y[known], p[known], volunteer[known]
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan"), float("nan")
    resamples = Resamples.draw(volunteer, n_resamples, seed)
    estimate = float(weighted_roc_auc(y, p, ones(len(y)))[0])
    return (estimate, *interval(resampled_roc_auc(resamples, np.arange(len(y)), y, p)))


# --------------------------------------------------------------------------- every model, every horizon


@dataclass
class Evaluation:
    """Test metrics under CONTRACT names with intervals, the lift per horizon, and how many rows they rest on."""

    metrics: dict[str, float]
    horizons: list[int]
    n_rows: dict[int, int]  # labelled test rows per horizon
    n_volunteers: int
    best_baseline: dict[int, str]


def evaluate_models(
    predictions: dict[str, np.ndarray],
    y_test: np.ndarray,
    horizons: list[int],
    history_length: np.ndarray,
    new_user: np.ndarray,
    volunteer: np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    progress=None,
) -> Evaluation:
    """Metrics of every model and horizon on the same test rows: `{prefix}test_{metric}_{W}m` (CONTRACT.md).

    Each carries `..._ci_low` / `..._ci_high`, a bootstrap interval over
    volunteers (`volunteer`: the test rows' volunteer ids; None = each row its
    own). Beyond the contract's roc_auc / pr_auc / brier: log loss, ECE, stop
    precision at 1% and 5%, ROC-AUC on volunteers never seen in training and on
    the lowest / highest quartile of history length. Then, per horizon,
    `lift_roc_auc_{W}m`: LSTM minus the best baseline (by point ROC-AUC), paired.
    `progress(horizons_done, horizons)` is called after each horizon.
    """
    volunteer = np.arange(len(y_test)) if volunteer is None else volunteer
    resamples = Resamples.draw(volunteer, n_resamples, seed)
    metrics: dict[str, float] = {}
    n_rows, best = {}, {}
    for h, minutes in enumerate(horizons):
        known = np.flatnonzero(~np.isnan(y_test[:, h]))
        n_rows[minutes] = len(known)
        if not len(known):
            continue
        history = history_length[known]
        subsets = {
            "roc_auc_new_users": new_user[known],
            "roc_auc_short_history": history <= np.quantile(history, 0.25),
            "roc_auc_long_history": history >= np.quantile(history, 0.75),
        }
        auc_samples = {}
        for name, p_all in predictions.items():
            values = horizon_metrics(y_test[known, h], p_all[known, h], known, subsets, resamples)
            auc_samples[name] = values["roc_auc"][1]
            for metric, (point, samples) in values.items():
                key = f"{MODEL_PREFIX[name]}test_{metric}_{minutes}m"
                metrics[key] = point
                metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = interval(samples)
        metrics.update(lift(metrics, auc_samples, minutes, best))
        if progress is not None:
            progress(h + 1, len(horizons))
    return Evaluation(metrics, list(horizons), n_rows, resamples.n_volunteers, best)


def horizon_metrics(
    y: np.ndarray, p: np.ndarray, rows: np.ndarray, subsets: dict[str, np.ndarray], resamples: Resamples
) -> dict[str, tuple[float, np.ndarray]]:
    """(exact point, bootstrap samples) of every metric of one model at one horizon; `rows` index the resamples."""
    y, p = y.astype(np.float64), p.astype(np.float64)
    point = all_metrics(y, p, ones(len(y)))
    samples = resampled_metrics(resamples, rows, y, p)
    out = {name: (float(point[name][0]), samples[name]) for name in point}
    for name, mask in subsets.items():
        y_sub, p_sub = y[mask], p[mask]
        estimate = float(weighted_roc_auc(y_sub, p_sub, ones(len(y_sub)))[0]) if len(y_sub) else float("nan")
        out[name] = (estimate, resampled_roc_auc(resamples, rows[mask], y_sub, p_sub))
    return out


def lift(metrics: dict[str, float], auc_samples: dict[str, np.ndarray], minutes: int, best: dict) -> dict:
    """`lift_roc_auc_{W}m`: LSTM minus the baseline with the best point ROC-AUC, with its paired interval."""
    candidates = {
        name: metrics.get(f"{MODEL_PREFIX[name]}test_roc_auc_{minutes}m", np.nan)
        for name in BASELINES
        if name in auc_samples
    }
    candidates = {name: auc for name, auc in candidates.items() if np.isfinite(auc)}
    if "lstm" not in auc_samples or not candidates:
        return {}
    best[minutes] = max(candidates, key=candidates.get)
    key = f"lift_roc_auc_{minutes}m"
    low, high = interval(auc_samples["lstm"] - auc_samples[best[minutes]])
    return {
        key: metrics[f"test_roc_auc_{minutes}m"] - candidates[best[minutes]],
        f"{key}_ci_low": low,
        f"{key}_ci_high": high,
    }


# --------------------------------------------------------------------------- words and tables


def fmt_interval(value: float, low: float, high: float, digits: int = 4) -> str:
    if not np.isfinite(low):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def lift_sentences(evaluation: Evaluation) -> dict[int, str]:
    """Per horizon: "better than logistic by 0.012 [0.004, 0.020]" or "not distinguishable from logistic on 300 test rows"."""
    out = {}
    for minutes, name in evaluation.best_baseline.items():
        m = evaluation.metrics
        value, low, high = (m[f"lift_roc_auc_{minutes}m{s}"] for s in ("", "_ci_low", "_ci_high"))
        where = f"{evaluation.n_rows[minutes]:,} test rows of {evaluation.n_volunteers:,} volunteers"
        if np.isfinite(low) and low > 0:
            words = f"better than {name} by {fmt_interval(value, low, high, 3)}"
        elif np.isfinite(high) and high < 0:
            words = f"worse than {name} by {fmt_interval(-value, -high, -low, 3)}"
        else:
            words = f"not distinguishable from {name} ({value:+.3f} [{low:+.3f}, {high:+.3f}]) on {where}"
        out[minutes] = words
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 4) -> str:
    """The package's one markdown table: floats to `digits` places (NaN as '-'), everything else as str()."""

    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return "-" if not np.isfinite(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def comparison_markdown(metrics: dict[str, float], horizons: list[int]) -> str:
    """Test ROC-AUC with its interval, PR-AUC and Brier, model by horizon."""
    header = ["model"] + [f"{label} {w}m" for w in horizons for label in ("ROC-AUC [95% CI]", "PR-AUC", "Brier")]
    rows = []
    for name, prefix in MODEL_PREFIX.items():
        row: list[object] = [name]
        for w in horizons:
            key = f"{prefix}test_roc_auc_{w}m"
            auc = metrics.get(key, float("nan"))
            ci = (metrics.get(f"{key}_ci_low", float("nan")), metrics.get(f"{key}_ci_high", float("nan")))
            row += [fmt_interval(auc, *ci), metrics.get(f"{prefix}test_pr_auc_{w}m", float("nan"))]
            row += [metrics.get(f"{prefix}test_brier_{w}m", float("nan"))]
        rows.append(row)
    return markdown_table(header, rows)


def metrics_frame(metrics: dict[str, float], horizons: list[int]):
    """A pandas DataFrame: one row per (model, horizon), one column per metric (and its _ci_low / _ci_high)."""
    import pandas as pd

    rows = []
    for name, prefix in MODEL_PREFIX.items():
        for minutes in horizons:
            head, suffix = f"{prefix}test_", f"_{minutes}m"
            values = {}
            for key, value in metrics.items():
                if not key.startswith(head):
                    continue
                for tail in ("", "_ci_low", "_ci_high"):
                    if key.endswith(suffix + tail):
                        values[key[len(head) : len(key) - len(suffix + tail)] + tail] = value
                        break
            if values:
                rows.append({"model": name, "horizon_minutes": minutes, **values})
    return pd.DataFrame(rows)


def frame_markdown(frame) -> str:
    return markdown_table(list(frame.columns), frame.to_numpy().tolist())
