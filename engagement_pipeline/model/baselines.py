"""Baselines the LSTM must beat, each given the same care: its key parameters chosen on validation.

Every baseline sees the current classification's features only (no history
window) and is fitted per horizon on the train rows, then scored on the test
rows the LSTM is scored on:

    base_rate       the train share of "continues"
    logistic        L2 logistic regression on the LSTM's own preprocessing; C from a small grid
    gbdt            histogram gradient boosting on raw features (NaN native), early stopping on
                    validation; learning rate x leaves from a small grid
    random_forest   on the LSTM's preprocessing; depth from a small grid

Each grid is searched on the validation period by ROC-AUC (the metric the
models are compared on), every candidate of the grid (at most `max_candidates`
per baseline and horizon, in the grid's order: the former fixed setting
first), on at most `max_val_rows` validation rows (a seeded sample when there
are more; gradient boosting stops early on the same rows). Only the chosen
candidate predicts the test period: at 38.5M classifications the validation
and test periods have 5.8M rows each, and scoring every candidate on all of
them took longer than fitting it. The budget is counted in candidates, never in seconds, so the same
data and seed choose the same parameters on a quiet or a busy machine; every
random source takes the run's seed (the row samples, the trees' random_state).
All baselines are fitted on one sample of at most `max_train_rows` train rows
(drawn with the seed; every row when there are fewer), the forest on a
sub-sample of that of at most `forest_max_train_rows`.
A feature with no observed value in the train rows is dropped for every
baseline (HistGradientBoosting cannot bin an all-NaN column); the caller says which.

sklearn is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engagement_pipeline.model.evaluation import BASELINES, roc_auc_or_nan

LOGISTIC_C = (1.0, 0.1, 0.01)
# The previous fixed setting first: with a validation period of one outcome there is nothing to choose by.
GBDT_GRID = ((0.05, 63), (0.1, 15))  # (learning_rate, max_leaf_nodes)
FOREST_DEPTH = (10, 16)


@dataclass
class BaselineFit:
    """Test predictions of every baseline [n_test, H], the parameters chosen per horizon, and what was dropped."""

    predictions: dict[str, np.ndarray]
    chosen: dict[str, dict[int, str]] = field(default_factory=dict)  # baseline -> horizon index -> "C=0.1"
    dropped_features: list[str] = field(default_factory=list)


def observed_columns(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Bool [F]: the features with at least one observed value in `rows` of X (one column at a time: the train
    rows of 38.5M classifications, copied whole, are 3 GB)."""
    return np.array([not np.isnan(X[rows, j]).all() for j in range(X.shape[1])], dtype=bool)


def validation_sample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` of `rows`, in order: a uniform draw over the whole period when there are more (from a
    generator of its own, so the train and forest samples stay what they were), else every row."""
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng([seed, 1]).choice(rows, limit, replace=False))


def search(candidates, fit_and_score, max_candidates: int):
    """Fit the first `max_candidates` candidates in order; return (best label, its test predictions).

    `fit_and_score(candidate)` returns (validation ROC-AUC, a function that predicts the test period); only the
    best candidate's is called. The best is the highest validation ROC-AUC; a tie (or no finite score) keeps the
    earlier candidate.
    """
    best = None
    for label, make in list(candidates)[: max(1, max_candidates)]:
        score, predict_test = fit_and_score(make)
        if best is None or (np.isfinite(score) and not score <= best[0]):
            best = (score if np.isfinite(score) else -np.inf, label, predict_test)
    return best[1], best[2]()


def fit_baselines(
    X: np.ndarray,
    labels: np.ndarray,
    split,
    scaling,
    feature_names: list[str],
    seed: int = 0,
    forest_max_train_rows: int = 100_000,
    max_candidates: int = 3,
    max_train_rows: int = 1_000_000,
    progress=None,
    max_val_rows: int = 1_000_000,
) -> BaselineFit:
    """Fit each baseline per horizon (a seeded sample of train rows), choose its parameters on validation (a
    seeded sample of validation rows), predict the test rows with the chosen one.

    `progress(done, total, name, horizon_index, seconds)` is called after each fit, so a long step is never silent.
    """
    import time

    from engagement_pipeline.model.lstm import Scaling, preprocess_tabular

    keep = observed_columns(X, split.train)
    dropped = [name for name, kept in zip(feature_names, keep) if not kept]
    columns = np.flatnonzero(keep)
    scaling = Scaling(scaling.log_transform[keep], scaling.mean[keep], scaling.std[keep])
    rng = np.random.default_rng(seed)
    train_rows = split.train
    if len(train_rows) > max_train_rows:
        train_rows = np.sort(rng.choice(train_rows, max_train_rows, replace=False))
    val_rows = validation_sample(split.val, max_val_rows, seed)
    periods = {"train": train_rows, "val": val_rows, "test": split.test}
    features = {part: X[np.ix_(rows, columns)] for part, rows in periods.items()}  # only these rows, copied once
    scaled = {part: preprocess_tabular(features[part], scaling) for part in periods}
    n_test, n_horizons = len(split.test), labels.shape[1]
    out = BaselineFit({name: np.full((n_test, n_horizons), np.nan, dtype=np.float32) for name in BASELINES})
    out.dropped_features = dropped
    for h in range(n_horizons):
        y_train, y_val = labels[train_rows, h], labels[val_rows, h]
        known, val_known = ~np.isnan(y_train), ~np.isnan(y_val)
        y = y_train[known].astype(int)
        out.predictions["base_rate"][:, h] = y.mean() if len(y) else 0.5
        if len(np.unique(y)) < 2:  # one outcome in train: nothing to rank by, every baseline is the base rate
            for name in BASELINES[1:]:
                out.predictions[name][:, h] = out.predictions["base_rate"][:, h]
                out.chosen.setdefault(name, {})[h] = "base rate (one outcome in train)"
            continue
        data = Horizon(scaled, features, known, y, val_known, y_val[val_known].astype(int))
        forest_rows = np.flatnonzero(known)
        if len(forest_rows) > forest_max_train_rows:
            forest_rows = np.sort(rng.choice(forest_rows, forest_max_train_rows, replace=False))
        for i, (name, fit) in enumerate(
            (("logistic", fit_logistic), ("gbdt", fit_gbdt), ("random_forest", fit_forest))
        ):
            started = time.perf_counter()
            label, p_test = fit(data, seed, max_candidates, forest_rows=forest_rows, y_all=y_train)
            out.predictions[name][:, h] = p_test
            out.chosen.setdefault(name, {})[h] = label
            if progress is not None:
                progress(3 * h + i + 1, 3 * n_horizons, name, h, time.perf_counter() - started)
    return out


@dataclass(frozen=True)
class Horizon:
    """One horizon's inputs: scaled and raw features per period, known-label masks and labels."""

    scaled: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    known: np.ndarray  # train rows with a label
    y: np.ndarray  # their labels (int)
    val_known: np.ndarray
    y_val: np.ndarray

    @property
    def val_has_both(self) -> bool:
        return len(np.unique(self.y_val)) == 2


def validation_score(data: Horizon, model, inputs: str):
    """(validation ROC-AUC, a function giving the test predictions) of a fitted model; inputs = 'scaled' or 'raw'."""
    source = data.scaled if inputs == "scaled" else data.raw
    p_val = model.predict_proba(source["val"][data.val_known])[:, 1] if data.val_has_both else None
    score = roc_auc_or_nan(data.y_val.astype(float), p_val) if p_val is not None else float("nan")
    return score, lambda: model.predict_proba(source["test"])[:, 1]


def fit_logistic(data: Horizon, seed: int, max_candidates: int, **_) -> tuple[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    def fit_and_score(C):
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
        return validation_score(data, model.fit(data.scaled["train"][data.known], data.y), "scaled")

    return search([(f"C={C:g}", C) for C in LOGISTIC_C], fit_and_score, max_candidates)


def fit_gbdt(data: Horizon, seed: int, max_candidates: int, **_) -> tuple[str, np.ndarray]:
    """Raw features (NaN handled natively), early stopping on the validation period when it has both outcomes."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    early = {"X_val": data.raw["val"][data.val_known], "y_val": data.y_val} if data.val_has_both else {}

    def fit_and_score(params):
        learning_rate, leaves = params
        model = HistGradientBoostingClassifier(
            learning_rate=learning_rate,
            max_iter=1000,
            max_leaf_nodes=leaves,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=True,
            n_iter_no_change=30,
            validation_fraction=None if early else 0.1,
            random_state=seed,
        ).fit(data.raw["train"][data.known], data.y, **early)
        return validation_score(data, model, "raw")

    grid = [(f"learning_rate={lr:g}, max_leaf_nodes={leaves}", (lr, leaves)) for lr, leaves in GBDT_GRID]
    return search(grid, fit_and_score, max_candidates)


def fit_forest(
    data: Horizon, seed: int, max_candidates: int, forest_rows: np.ndarray, y_all: np.ndarray, **_
) -> tuple[str, np.ndarray]:
    """100 trees on at most `forest_max_train_rows` train rows (the same sample for every depth).

    Fitted on 2 threads (each tree has its own seed from `seed`: the same trees whatever the timing), but it
    predicts on one: scikit-learn adds the trees' outputs in the order threads finish, which changes the
    probabilities' last bits with the machine's load.
    """
    from sklearn.ensemble import RandomForestClassifier

    def fit_and_score(depth):
        model = RandomForestClassifier(
            n_estimators=100, max_depth=depth, min_samples_leaf=5, n_jobs=2, random_state=seed
        ).fit(data.scaled["train"][forest_rows], y_all[forest_rows].astype(int))
        return validation_score(data, model.set_params(n_jobs=1), "scaled")

    return search([(f"max_depth={d}", d) for d in FOREST_DEPTH], fit_and_score, max_candidates)
