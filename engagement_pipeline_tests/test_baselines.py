"""model/baselines.py: the search predicts the test period with the chosen candidate only, and the baselines
choose on a seeded sample of validation rows when the period is bigger than `max_val_rows`.

Real scikit-learn fits on the synthetic warehouse of test_training (3,000 classifications).
"""

import numpy as np
import pytest

from engagement_pipeline.model import baselines
from engagement_pipeline.model.lstm import fit_scaling
from engagement_pipeline.model.training import TrainingConfig, time_split
from engagement_pipeline_tests.training_fixtures import make_warehouse, read_dataset


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    database = make_warehouse(tmp_path_factory.mktemp("baselines") / "warehouse.duckdb", n_rows=3_000, seed=1)
    data = read_dataset(database)
    config = TrainingConfig()
    split = time_split(data.matrix.created_at, data.labels, data.horizons, config.train_fraction, config.val_fraction)
    return data, split, fit_scaling(data.matrix.X[split.train])


def fit(inputs, **kwargs):
    data, split, scaling = inputs
    return baselines.fit_baselines(
        data.matrix.X, split.labels, split, scaling, data.matrix.feature_names, seed=3,
        forest_max_train_rows=500, max_candidates=2, **kwargs,
    )  # fmt: skip


def test_the_search_predicts_the_test_period_with_the_chosen_candidate_only():
    predicted = []
    scores = {"a": 0.60, "b": 0.70, "c": 0.70, "d": float("nan")}

    def fit_and_score(name):
        return scores[name], lambda: predicted.append(name) or np.full(4, ord(name), dtype=float)

    label, p_test = baselines.search([(name, name) for name in scores], fit_and_score, max_candidates=4)
    assert (label, predicted) == ("b", ["b"])  # a tie keeps the earlier candidate; NaN never wins
    assert (p_test == ord("b")).all()
    label, _ = baselines.search([(name, name) for name in scores], fit_and_score, max_candidates=1)
    assert label == "a" and predicted == ["b", "a"]


def test_the_validation_sample_is_drawn_over_the_whole_period():
    rows = np.arange(10_000, 60_000)
    sample = baselines.validation_sample(rows, 5_000, seed=3)
    assert len(sample) == len(np.unique(sample)) == 5_000 and np.isin(sample, rows).all()
    assert (np.diff(sample) > 0).all()  # in the period's order
    # uniform over the period, not its first rows: each tenth of it holds about a tenth of the sample
    per_tenth = np.bincount((sample - rows[0]) * 10 // len(rows), minlength=10)
    assert per_tenth.min() > 400, per_tenth
    np.testing.assert_array_equal(sample, baselines.validation_sample(rows, 5_000, seed=3))
    assert not np.array_equal(sample, baselines.validation_sample(rows, 5_000, seed=4))
    assert baselines.validation_sample(rows, 50_000, seed=3) is rows


def test_the_baselines_choose_on_a_seeded_sample_of_validation_rows(inputs, monkeypatch):
    _, split, _ = inputs
    n_val = len(split.val)
    seen = []
    score = baselines.roc_auc_or_nan

    def counting(y, p):
        seen.append(len(y))
        return score(y, p)

    monkeypatch.setattr(baselines, "roc_auc_or_nan", counting)
    whole = fit(inputs, max_val_rows=n_val)
    known = [int((~np.isnan(split.labels[split.val, h])).sum()) for h in range(split.labels.shape[1])]
    assert sorted(set(seen)) == sorted(set(known))  # every validation score on every known validation row

    seen.clear()
    sampled = fit(inputs, max_val_rows=n_val // 4)
    assert seen and max(seen) <= n_val // 4 and min(seen) > 0
    again = fit(inputs, max_val_rows=n_val // 4)
    for name, predictions in sampled.predictions.items():
        assert predictions.shape == (len(split.test), split.labels.shape[1])
        assert not np.isnan(predictions).any()
        np.testing.assert_array_equal(predictions, again.predictions[name])  # the same sample for the same seed
    # gradient boosting stops early on the sample, so its model (and its test predictions) differ
    assert not np.array_equal(sampled.predictions["gbdt"], whole.predictions["gbdt"])


@pytest.mark.parametrize("threads", [1, 0])
def test_gradient_boosting_fits_on_the_configured_openmp_threads(inputs, monkeypatch, threads):
    # 0 = every core: a 2-core machine's OpenMP pool; 1 = the default, which a busy machine does not slow tenfold
    import os

    from threadpoolctl import threadpool_info

    from engagement_pipeline.model.assets import fit_all_baselines

    data, split, scaling = inputs
    seen = []

    def recording(*args, **kwargs):  # what gradient boosting would fit on; its fit itself is not the point here
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp")
        return "recorded", np.zeros(len(split.test))

    monkeypatch.setattr(baselines, "fit_gbdt", recording)
    config = TrainingConfig(baseline_threads=threads, forest_max_train_rows=500, baseline_max_candidates=1)
    fit_all_baselines(data, split, scaling, config, say=lambda message: None)
    expected = threads or len(os.sched_getaffinity(0))  # whatever OMP_NUM_THREADS says (the tests set 1)
    assert seen and set(seen) == {expected}, seen
