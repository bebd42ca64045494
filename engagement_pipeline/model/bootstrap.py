"""The volunteer-level bootstrap: resamples of whole volunteers, every metric per resample, the interval.

A volunteer's classifications are not independent of each other, so a
resample draws volunteers with replacement (multinomial counts, seeded) and
each row weighs as often as its volunteer was drawn. Every model and metric
of one run shares one count matrix, so intervals of differences (the lift,
the gate's comparison) are paired.

Cost does not grow with rows x resamples. The rows of one model and horizon
are first reduced to per-volunteer histograms over fixed score bins (the
scores' quantiles, equal scores always in one bin): positives and negatives
per (volunteer, bin), a sparse [V, K] matrix with at most min(N, V x K)
entries. A resample's bin totals are its volunteer counts times that matrix,
so all B resamples cost B x nnz, and the metrics then walk K bins, not N rows.
Brier, log loss, ECE are per-volunteer sums (exact). ROC-AUC, PR-AUC and stop
precision see two rows in the same bin as tied: with SCORE_BINS quantile
bins a resample's ROC-AUC is within about 1 / (2 x SCORE_BINS) of the exact
one (engagement_pipeline_tests/test_statistics.py measures it against the
row-level computation). The point estimates are always exact (evaluation.py).

Everything summed here is an integer count in float64 (exact whatever the
order of summation) or a per-volunteer sum taken in a fixed order, so the
same rows, scores and seed give the same interval on a quiet or a busy machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 200
SCORE_BINS = 1024
STOP_FRACTIONS = ((0.01, "stop_precision_top1pct"), (0.05, "stop_precision_top5pct"))


@dataclass(frozen=True)
class Resamples:
    """B volunteer-level bootstrap resamples of n rows: `counts[b, u]` = draws of volunteer u in resample b."""

    counts: np.ndarray  # float64 [B, U] (integer valued)
    volunteer: np.ndarray  # int64 [n]: each row's volunteer, 0..U-1

    @classmethod
    def draw(cls, groups: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Resamples:
        """Draw U volunteers with replacement B times from numpy's Generator seeded with `seed`."""
        _, volunteer = np.unique(groups, return_inverse=True)
        volunteer = volunteer.reshape(-1)
        n_volunteers = int(volunteer.max()) + 1 if len(volunteer) else 0
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n_volunteers, np.full(n_volunteers, 1.0 / max(n_volunteers, 1)), size=n_resamples)
        return cls(counts.astype(np.float64), volunteer.astype(np.int64))

    @property
    def n_volunteers(self) -> int:
        return self.counts.shape[1]

    def row_weights(self, rows: np.ndarray) -> np.ndarray:
        """[B, len(rows)]: each row's weight in each resample (the exact, row-level form; for small data and tests)."""
        return self.counts[:, self.volunteer[rows]]

    def totals(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """[B, J]: per resample, the weighted sums of `values` [len(rows), J] (summed per volunteer first)."""
        volunteer = self.volunteer[rows]
        per_volunteer = np.stack(
            [np.bincount(volunteer, values[:, j], minlength=self.n_volunteers) for j in range(values.shape[1])], 1
        )
        return self.counts @ per_volunteer

    def binned(self, rows: np.ndarray, bins: np.ndarray, n_bins: int, values: np.ndarray) -> np.ndarray:
        """[B, n_bins]: per resample, the weighted sum of `values` (integer counts) in each score bin."""
        from scipy import sparse

        histogram = sparse.csr_matrix(
            (values.astype(np.float64), (self.volunteer[rows], bins)), shape=(self.n_volunteers, n_bins)
        )
        return np.asarray((histogram.T @ self.counts.T).T)


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The percentile interval at CONFIDENCE of bootstrap samples (NaN samples, e.g. one class drawn, skipped)."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < 2:
        return float("nan"), float("nan")
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def score_bins(p: np.ndarray, n_bins: int = SCORE_BINS) -> tuple[np.ndarray, int]:
    """(bin of each score, number of bins): bins at the scores' quantiles, equal scores in the same bin."""
    if not len(p):
        return np.zeros(0, np.int64), 1
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, p, side="right").astype(np.int64), len(edges) + 1


def binned_counts(resamples: Resamples, rows: np.ndarray, y: np.ndarray, p: np.ndarray):
    """Per resample and score bin (ascending): (positives, negatives), both [B, K]."""
    bins, n_bins = score_bins(p)
    positives = resamples.binned(rows, bins, n_bins, (y == 1).astype(np.float64))
    negatives = resamples.binned(rows, bins, n_bins, (y == 0).astype(np.float64))
    return positives, negatives


def roc_auc_from_bins(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """ROC-AUC per row from bin totals in ascending score order; pairs within a bin count half."""
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(1) * negatives.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (positives * (below + 0.5 * negatives)).sum(1) / pairs, np.nan)


def resampled_roc_auc(resamples: Resamples, rows: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[B]: ROC-AUC of scores p for labels y (1/0) of `rows` in every resample."""
    return roc_auc_from_bins(*binned_counts(resamples, rows, y, p))


def lowest_share_of_stops(positives: np.ndarray, negatives: np.ndarray, fraction: float) -> np.ndarray:
    """Share of stops (y = 0) among the lowest-scored `fraction` of each resample's rows (the last bin pro rata)."""
    weight = positives + negatives
    total = weight.sum(1)
    k = np.maximum(1.0, np.round(fraction * total))
    before = np.cumsum(weight, axis=1) - weight
    taken = np.clip(k[:, None] - before, 0.0, weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_stopped = np.where(weight > 0, negatives / weight, 0.0)
        return (taken * share_stopped).sum(1) / taken.sum(1)


def resampled_metrics(resamples: Resamples, rows: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """[B] samples of every test metric of evaluation.all_metrics, for `rows` with labels y (1/0) and scores p."""
    positives, negatives = binned_counts(resamples, rows, y, p)
    out = {"roc_auc": roc_auc_from_bins(positives, negatives)}
    n_pos = positives.sum(1)
    weight = positives + negatives
    at_or_above = weight[:, ::-1].cumsum(1)[:, ::-1]
    positives_at_or_above = positives[:, ::-1].cumsum(1)[:, ::-1]
    q = np.clip(p, 1e-7, 1 - 1e-7)
    calibration = np.zeros((len(p), 10))
    calibration[np.arange(len(p)), np.clip((p * 10).astype(int), 0, 9)] = p - y
    sums = resamples.totals(
        rows,
        np.column_stack([np.ones(len(p)), (p - y) ** 2, -(y * np.log(q) + (1 - y) * np.log1p(-q)), calibration]),
    )
    total = sums[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = positives_at_or_above / np.maximum(at_or_above, 1e-12)
        out["pr_auc"] = np.where(n_pos > 0, (positives * precision).sum(1) / n_pos, np.nan)
        out["brier"] = sums[:, 1] / total
        out["log_loss"] = sums[:, 2] / total
        out["ece"] = np.abs(sums[:, 3:]).sum(1) / total
    for fraction, name in STOP_FRACTIONS:
        out[name] = lowest_share_of_stops(positives, negatives, fraction)
    return out
