"""The statistics behind every interval: checked against plain numpy loops written here, on small data.

Each reference below is an independent, deliberately naive computation (a
Python loop over resamples, all pairs compared, rows repeated by hand), so a
wrong statistic in evaluation.py / bootstrap.py / checks.py disagrees with it:
resampling rows instead of volunteers, a stop precision over the wrong number
of rows, a ROC-AUC that counts ties wrong. Pure and fast (no store, no model).
"""

import numpy as np
import pytest

from engagement_pipeline.model.bootstrap import (
    SCORE_BINS,
    Resamples,
    interval,
    resampled_metrics,
    resampled_roc_auc,
)
from engagement_pipeline.model.evaluation import (
    all_metrics,
    auc_with_interval,
    binary_metrics,
    evaluate_models,
    mean_auc_with_interval,
)
from engagement_pipeline.model.registry import promotion_rule
from engagement_pipeline.monitoring.checks import realized_intervals

# --------------------------------------------------------------------------- independent references


def reference_auc(y: np.ndarray, p: np.ndarray) -> float:
    """P(positive scored above negative), ties half: every pair compared."""
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def reference_stop_precision(y: np.ndarray, p: np.ndarray, fraction: float) -> float:
    """Sort by P(continue), take the round(fraction * n) lowest, share that stopped."""
    k = max(1, int(round(fraction * len(y))))
    lowest = sorted(range(len(y)), key=lambda i: p[i])[:k]
    return float(np.mean([y[i] == 0 for i in lowest]))


def reference_bootstrap_width(y, p, volunteer, statistic, by_volunteer: bool, n_resamples=250, seed=99) -> float:
    """95% percentile interval width of `statistic` when resampling volunteers (or rows), one resample at a time."""
    rng = np.random.default_rng(seed)
    members = {v: np.flatnonzero(volunteer == v) for v in np.unique(volunteer)}
    ids = list(members)
    values = []
    for _ in range(n_resamples):
        if by_volunteer:
            drawn = rng.integers(0, len(ids), len(ids))
            rows = np.concatenate([members[ids[d]] for d in drawn])
        else:
            rows = rng.integers(0, len(y), len(y))
        values.append(statistic(y[rows], p[rows]))
    values = np.array(values)
    values = values[np.isfinite(values)]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(high - low)


def correlated_volunteers(n_volunteers=40, per_volunteer=12, seed=0):
    """Volunteers who mostly keep going or mostly stop, and a model that scores the volunteer, not the moment:
    the rows of one volunteer carry nearly the same information, so there are ~40 independent units, not 480."""
    rng = np.random.default_rng(seed)
    volunteer = np.repeat(np.arange(n_volunteers), per_volunteer)
    level = rng.normal(size=n_volunteers)
    keeps_going = rng.random(n_volunteers) < 1 / (1 + np.exp(-1.5 * level))
    y = np.where(rng.random(len(volunteer)) < 0.9, keeps_going[volunteer], ~keeps_going[volunteer]).astype(float)
    p = 1 / (1 + np.exp(-(level[volunteer] + 0.1 * rng.normal(size=len(volunteer)))))
    return y, p, volunteer


# --------------------------------------------------------------------------- the volunteer-level interval


def test_volunteer_interval_is_wider_than_rows_and_matches_a_loop_reference():
    y, p, volunteer = correlated_volunteers()
    estimate, low, high = auc_with_interval(y, p, volunteer, n_resamples=300, seed=3)
    assert estimate == pytest.approx(reference_auc(y, p), abs=1e-12)
    reference_volunteers = reference_bootstrap_width(y, p, volunteer, reference_auc, by_volunteer=True)
    reference_rows = reference_bootstrap_width(y, p, volunteer, reference_auc, by_volunteer=False)
    assert reference_volunteers > 2.0 * reference_rows  # the data really is correlated within volunteers
    # ours is the volunteer-level one: within Monte Carlo noise of the loop, far from the row-level width
    assert 0.75 * reference_volunteers < high - low < 1.33 * reference_volunteers
    assert high - low > 1.6 * reference_rows


def test_evaluation_intervals_resample_volunteers_not_rows():
    y, p, volunteer = correlated_volunteers(seed=1)
    predictions = {"lstm": p[:, None], "logistic": p[:, None] ** 2, "base_rate": np.full((len(y), 1), 0.5)}
    common = (predictions, y[:, None].astype(np.float32), [10], np.arange(len(y)), np.zeros(len(y), bool))
    by_volunteer = evaluate_models(*common, volunteer=volunteer, n_resamples=300).metrics
    by_row = evaluate_models(*common, volunteer=None, n_resamples=300).metrics
    width = by_volunteer["test_roc_auc_10m_ci_high"] - by_volunteer["test_roc_auc_10m_ci_low"]
    row_width = by_row["test_roc_auc_10m_ci_high"] - by_row["test_roc_auc_10m_ci_low"]
    reference = reference_bootstrap_width(y, p, volunteer, reference_auc, by_volunteer=True)
    assert 0.75 * reference < width < 1.33 * reference
    assert width > 1.6 * row_width
    # the brier interval too: volunteers' squared errors move together
    brier = lambda y_, p_: float(np.mean((p_ - y_) ** 2))  # noqa: E731
    reference_brier = reference_bootstrap_width(y, p, volunteer, brier, by_volunteer=True)
    brier_width = by_volunteer["test_brier_10m_ci_high"] - by_volunteer["test_brier_10m_ci_low"]
    assert 0.75 * reference_brier < brier_width < 1.33 * reference_brier


def test_realized_quality_interval_is_the_volunteer_one():
    y, p, volunteer = correlated_volunteers(seed=2)
    realized, known = realized_intervals(y[:, None], p[:, None], volunteer, [10])
    estimate, low, high = realized[10]
    assert known == {10: len(y)}
    assert estimate == pytest.approx(reference_auc(y, p), abs=1e-12)
    reference = reference_bootstrap_width(y, p, volunteer, reference_auc, by_volunteer=True)
    rows = reference_bootstrap_width(y, p, volunteer, reference_auc, by_volunteer=False)
    assert 0.75 * reference < high - low < 1.33 * reference and high - low > 1.6 * rows


def test_binned_resamples_agree_with_the_row_level_computation():
    """The per-volunteer histograms against every resample done row by row (the same counts): ranking metrics
    within the bins' resolution, sums exactly."""
    rng = np.random.default_rng(4)
    n = 3_000
    volunteer = rng.integers(0, 120, n)
    y = (rng.random(n) < 0.6).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    p[:300] = np.round(p[:300], 1)  # ties as well
    resamples = Resamples.draw(volunteer, 60, seed=5)
    rows = np.arange(n)
    binned = resampled_metrics(resamples, rows, y, p)
    exact = all_metrics(y, p, resamples.row_weights(rows))
    tolerance = {"roc_auc": 1 / SCORE_BINS, "pr_auc": 2 / SCORE_BINS}
    for name, samples in binned.items():
        np.testing.assert_allclose(
            samples, exact[name], rtol=0, atol=tolerance.get(name, 1e-3 if "stop" in name else 1e-10), err_msg=name
        )
    # and a resample equals repeating the rows by hand
    for b in (0, 7):
        repeated = np.repeat(rows, resamples.row_weights(rows)[b].astype(int))
        assert binned["roc_auc"][b] == pytest.approx(reference_auc(y[repeated], p[repeated]), abs=1 / SCORE_BINS)


def test_with_fewer_distinct_scores_than_bins_the_resamples_are_exact_and_ties_count_half():
    rng = np.random.default_rng(6)
    volunteer = rng.integers(0, 50, 600)
    y = (rng.random(600) < 0.5).astype(float)
    p = np.round(np.clip(0.3 * y + 0.7 * rng.random(600), 0, 1), 1)  # 11 distinct scores: many ties
    resamples = Resamples.draw(volunteer, 40, seed=2)
    rows = np.arange(600)
    binned = resampled_metrics(resamples, rows, y, p)
    for b in (0, 1, 2):
        repeated = np.repeat(rows, resamples.row_weights(rows)[b].astype(int))
        assert binned["roc_auc"][b] == pytest.approx(reference_auc(y[repeated], p[repeated]), abs=1e-12)
    assert binary_metrics(y, p)["roc_auc"] == pytest.approx(reference_auc(y, p), abs=1e-12)


def test_resamples_are_reproducible_from_the_seed_alone():
    y, p, volunteer = correlated_volunteers(seed=3)
    first = resampled_roc_auc(Resamples.draw(volunteer, 50, seed=11), np.arange(len(y)), y, p)
    again = resampled_roc_auc(Resamples.draw(volunteer, 50, seed=11), np.arange(len(y)), y, p)
    other = resampled_roc_auc(Resamples.draw(volunteer, 50, seed=12), np.arange(len(y)), y, p)
    assert np.array_equal(first, again, equal_nan=True) and not np.array_equal(first, other, equal_nan=True)


# --------------------------------------------------------------------------- stop precision


def stop_data(n=2_000, seed=5):
    """The lowest 5% of scores all stopped; above them half do: a stop precision over any other number of rows
    than 5% differs clearly from 1."""
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (rng.random(n) < 0.5).astype(float)
    y[p <= np.quantile(p, 0.05)] = 0.0
    return y, p


def test_stop_precision_is_the_share_of_stops_among_the_lowest_fraction():
    y, p = stop_data()
    got = binary_metrics(y, p)
    for fraction, name in ((0.01, "stop_precision_top1pct"), (0.05, "stop_precision_top5pct")):
        assert got[name] == pytest.approx(reference_stop_precision(y, p, fraction), abs=1e-12)
    assert got["stop_precision_top5pct"] == 1.0


def test_stop_precision_resamples_match_repeated_rows():
    y, p = stop_data(seed=6)
    volunteer = np.arange(len(y)) // 10
    resamples = Resamples.draw(volunteer, 20, seed=1)
    rows = np.arange(len(y))
    samples = resampled_metrics(resamples, rows, y, p)["stop_precision_top5pct"]
    for b in range(5):
        repeated = np.repeat(rows, resamples.row_weights(rows)[b].astype(int))
        assert samples[b] == pytest.approx(reference_stop_precision(y[repeated], p[repeated], 0.05), abs=0.02)


# --------------------------------------------------------------------------- the gate's numbers and rule


def test_gate_mean_auc_interval_is_volunteer_level_and_its_point_exact():
    y, p, volunteer = correlated_volunteers(seed=4)
    Y, P = np.stack([y, y], 1), np.stack([p, 1 - p], 1)  # a good horizon and a reversed one: mean 0.5
    score, (low, high) = mean_auc_with_interval(Y, P, Resamples.draw(volunteer, 300, seed=0))
    assert score == pytest.approx(0.5, abs=1e-12)
    assert low <= 0.5 <= high
    single, (s_low, s_high) = mean_auc_with_interval(y[:, None], p[:, None], Resamples.draw(volunteer, 300, seed=0))
    assert single == pytest.approx(reference_auc(y, p))
    reference = reference_bootstrap_width(y, p, volunteer, reference_auc, by_volunteer=True)
    assert 0.75 * reference < s_high - s_low < 1.33 * reference


def test_promotion_rule():
    assert promotion_rule(0.6, None)  # no champion to compare with
    assert promotion_rule(0.7, 0.7)  # at least as good
    assert not promotion_rule(0.69, 0.7)
    assert not promotion_rule(0.9, float("nan"))  # a champion that scored NaN is not replaced without comparison


def test_interval_skips_nan_resamples_and_needs_two():
    assert all(np.isnan(interval(np.array([np.nan, 0.5]))))
    low, high = interval(np.r_[np.arange(101.0), np.nan])
    assert (low, high) == (pytest.approx(2.5), pytest.approx(97.5))
