"""How much more than the logistic baseline could any model get from what a volunteer's history shows?

    .venv/bin/engagement generate --shape traits --rows 150000 --seed 7 --out /tmp/traits/exports/traits.csv.gz
    ENGAGEMENT_HOME=/tmp/traits/home .venv/bin/engagement run --exports /tmp/traits/exports --score-days 1
    .venv/bin/python benchmarks/model_ceiling.py /tmp/traits/home [more homes ...]

An information probe for issue 12 (the LSTM's lift over the best baseline),
run on homes that `engagement run` has built, on the same time split and
test rows as `engagement_model`. The LSTM sees the last K classifications,
mostly the current session; what could still be missing is in the
volunteer's earlier sessions, so each candidate below is given them in the
most direct form a model could learn, and compared with the logistic
regression on the current row (C chosen on validation, as the baseline is):

    logistic + own survival  the volunteer's empirical survival from their last 10 sessions: the
                             share of those that ran W minutes past the current session's length so
                             far, among those that reached it (add-one smoothed), and the same in
                             classifications; plus how many sessions that rests on
    gbdt + past sessions     gradient boosting on the features plus the last 10 sessions' minutes and
                             classifications as raw columns (free to find any interaction)
    stack on validation      a logistic regression fitted on the validation period over the logistic's
                             and the gradient boosting's logits (recalibration across the time shift)

Each row gives test ROC-AUC per horizon and its difference from the logistic
with a paired volunteer-level bootstrap 95% interval (evaluation.Resamples).
If none of these gains 0.01, a sequence model over the same history has
nothing to learn that would: the signal is not in the observable history.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

PAST_SESSIONS = 10

# The last PAST_SESSIONS feature sessions before each classification's own, as columns
# (NULL where the volunteer had fewer); the same 30-minute sessions as int_feature_sessions.
PAST_SESSIONS_SQL = """
with session_totals as (
    select user_number, feature_session_number, count(*) as n_classifications,
        (epoch_us(max(created_at)) - epoch_us(min(created_at))) / 60e6 as minutes
    from int_user_timeline
    group by all
),
session_history as (
    select user_number, feature_session_number,
        list(minutes) over earlier as past_minutes,
        list(n_classifications) over earlier as past_classifications
    from session_totals
    window earlier as (partition by user_number order by feature_session_number
                       rows between {n} preceding and 1 preceding)
)
select timeline.classification_id,
    (epoch_us(timeline.created_at) - epoch_us(feature_session.session_start)) / 60e6 as minutes_so_far,
    timeline.user_seq - feature_session.first_user_seq + 1 as position_in_session,
    {minutes_columns}, {classification_columns}
from int_user_timeline as timeline
join int_feature_sessions as feature_session using (user_number, feature_session_number)
join session_history using (user_number, feature_session_number)
order by timeline.classification_id
"""


def past_sessions(con, classification_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(minutes so far, position in session, past minutes [N, S], past classifications [N, S]) in matrix order."""
    # list[-i]: the i-th latest earlier session; past the list's start DuckDB gives NULL
    columns = {
        kind: ", ".join(f"past_{kind}[-{i}]::double as {kind}_{i}" for i in range(1, PAST_SESSIONS + 1))
        for kind in ("minutes", "classifications")
    }
    sql = PAST_SESSIONS_SQL.format(
        n=PAST_SESSIONS, minutes_columns=columns["minutes"], classification_columns=columns["classifications"]
    )
    table = con.sql(sql).fetchnumpy()
    at = np.searchsorted(table["classification_id"], classification_id)

    def stack(kind):
        columns = [
            np.ma.filled(np.ma.asarray(table[f"{kind}_{i}"], dtype=float), np.nan) for i in range(1, PAST_SESSIONS + 1)
        ]
        return np.stack(columns, axis=1)[at]

    return table["minutes_so_far"][at], table["position_in_session"][at], stack("minutes"), stack("classifications")


def survival(past: np.ndarray, so_far: np.ndarray, ahead: np.ndarray) -> np.ndarray:
    """Smoothed share of past sessions that went `ahead` beyond `so_far`, among those that reached `so_far`."""
    with np.errstate(invalid="ignore"):
        reached = np.nansum(past > so_far[:, None], axis=1)
        beyond = np.nansum(past > (so_far + ahead)[:, None], axis=1)
    return (beyond + 1) / (reached + 2), np.log1p(reached)


def auc_with_samples(y: np.ndarray, p: np.ndarray, resamples) -> tuple[float, np.ndarray]:
    """Point ROC-AUC and its bootstrap samples (the same resamples for every candidate: paired)."""
    from engagement_pipeline.model.evaluation import ones, resampled_roc_auc, weighted_roc_auc

    samples = resampled_roc_auc(resamples, np.arange(len(y)), y, p)
    return float(weighted_roc_auc(y, p, ones(len(y)))[0]), samples


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_logistic(X, y, train, val):
    """The baseline's recipe: L2 logistic regression, C chosen on validation ROC-AUC."""
    from sklearn.linear_model import LogisticRegression

    from engagement_pipeline.model.baselines import LOGISTIC_C
    from engagement_pipeline.model.evaluation import roc_auc_or_nan

    fits = [LogisticRegression(C=C, max_iter=2000).fit(X[train], y[train]) for C in LOGISTIC_C]
    return max(fits, key=lambda m: roc_auc_or_nan(y[val], m.predict_proba(X[val])[:, 1]))


def probe(home: Path) -> tuple[list[list[str]], list[int], int, int]:
    """Table rows (one per candidate) for one home, its horizons, test rows and test volunteers."""
    import duckdb
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from engagement_pipeline.model.baselines import observed_columns
    from engagement_pipeline.model.evaluation import Resamples, interval
    from engagement_pipeline.model.lstm import fit_scaling, preprocess_tabular
    from engagement_pipeline.model.training import TrainingConfig, load_dataset, time_split

    config = TrainingConfig()
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    con.execute("SET TimeZone='UTC'")
    data = load_dataset(con)
    m = data.matrix
    minutes_so_far, position, past_minutes, past_count = past_sessions(con, m.classification_id)
    con.close()
    split = time_split(m.created_at, data.labels, data.horizons, config.train_fraction, config.val_fraction)
    Z = preprocess_tabular(m.X, fit_scaling(m.X[split.train]))
    raw_past = np.concatenate([m.X, np.log1p(past_minutes), np.log(past_count)], axis=1)
    raw_past = raw_past[
        :, observed_columns(raw_past[split.train])
    ]  # no task timing: HistGradientBoosting cannot bin NaN-only
    rows = {name: [] for name in ("logistic", "logistic + own survival", "gbdt + past sessions", "stack on validation")}
    for h, minutes in enumerate(data.horizons):
        y = split.labels[:, h]
        train, val, test = (r[~np.isnan(y[r])] for r in (split.train, split.val, split.test))
        s_minutes, n_minutes = survival(past_minutes, minutes_so_far, np.full(len(m), float(minutes)))
        # classifications ahead: W minutes at the session's pace so far
        pace = minutes_so_far / np.maximum(position - 1, 1)
        s_count, _ = survival(past_count, position.astype(float), minutes / np.maximum(pace, 0.05))
        Z_survival = np.concatenate([Z, np.stack([logit(s_minutes), n_minutes, logit(s_count)], axis=1)], axis=1)
        p = {"logistic": fit_logistic(Z, y, train, val).predict_proba(Z)[:, 1]}
        p["logistic + own survival"] = fit_logistic(Z_survival, y, train, val).predict_proba(Z_survival)[:, 1]
        gbdt = HistGradientBoostingClassifier(
            learning_rate=0.05, max_iter=1000, max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
            early_stopping=True, n_iter_no_change=30, validation_fraction=None, random_state=0,
        ).fit(raw_past[train], y[train], X_val=raw_past[val], y_val=y[val])  # fmt: skip
        p["gbdt + past sessions"] = gbdt.predict_proba(raw_past)[:, 1]
        stacked = np.stack([logit(p["logistic"]), logit(p["gbdt + past sessions"])], axis=1)
        p["stack on validation"] = LogisticRegression().fit(stacked[val], y[val]).predict_proba(stacked)[:, 1]
        resamples = Resamples.draw(m.user_start[test], config.bootstrap_resamples)

        base, base_samples = auc_with_samples(y[test], p["logistic"][test], resamples)
        for name, q in p.items():
            auc, samples = auc_with_samples(y[test], q[test], resamples)
            low, high = interval(samples - base_samples)
            cell = f"{auc:.4f}" if name == "logistic" else f"{auc:.4f} ({auc - base:+.4f} [{low:+.4f}, {high:+.4f}])"
            rows[name].append(cell)
    label = home.parent.name if home.name == "home" else home.name
    table = [[label, name, *cells] for name, cells in rows.items()]
    return table, data.horizons, len(split.test), len(np.unique(m.user_start[split.test]))


def main(argv: list[str] | None = None) -> int:
    from engagement_pipeline.model.evaluation import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("homes", type=Path, nargs="+", help="ENGAGEMENT_HOME folders that `engagement run` built")
    args = parser.parse_args(argv)
    table, horizons = [], [10, 20, 30]
    for home in args.homes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's convergence notes at C=1
            rows, horizons, n_test, n_volunteers = probe(home)
        table += rows
        print(f"{home}: {n_test:,} test rows of {n_volunteers:,} volunteers", flush=True)
        print(markdown_table(["home", "model", *(f"{w}m" for w in horizons)], rows), flush=True)
    head = ["home", "model", *(f"{w}m ROC-AUC (vs logistic [95% CI])" for w in horizons)]
    print("\n" + markdown_table(head, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
