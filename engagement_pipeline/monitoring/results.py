"""What the two checks computed for a scored day, kept in the warehouse so the report shows those same figures.

Each check on `user_predictions` (checks.py) computes its figures once per
partition and stores them here before it returns its verdict; the morning
report (report.py) reads them for its day and the model version that scored
the day, and computes none of them again. Two tables, named like the checks:

* `feature_drift`: one row per model input (rank 1 = highest PSI) with its
  PSI, limit, effective size, whether it is judged, and the bins the report
  draws; the day's classifications and volunteer-days on every row. A day the
  check could not judge (no drift reference, other inputs) is one row with no
  input and `not_computed_because`.
* `realized_quality`: one row per horizon with the latest labelled day, the
  realized ROC-AUC and its 95% volunteer-level interval, the test interval it
  was held against, the known outcomes, the Brier score and the calibration
  points (octiles of the prediction); `not_computed_because` when there was
  nothing to evaluate.

Both are keyed by (`day`, `model_name`, `model_version`): `day` is the
partition (for realized quality, the day whose check it was; `labelled_day`
is the day whose outcomes it measured). A check that runs again replaces its
rows for that key in one transaction, so a reader sees the old rows or the
new ones. Unknown figures are NULL. `checked_at` says when.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from engagement_pipeline.monitoring.drift import DriftResult, InputDrift

DRIFT_TABLE = "feature_drift"
REALIZED_TABLE = "realized_quality"

MIN_KNOWN_OUTCOMES = 30  # per horizon, with both outcomes present, to judge a day's ROC-AUC


@dataclass
class RealizedQuality:
    """The realized_quality check's figures for one partition (checks.py computes them, the report reads them)."""

    day: dt.date | None  # the latest day, on or before the partition, whose outcomes are all known
    model: str
    horizons: list[int]
    realized: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # W -> (auc, low, high)
    test: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # W -> (auc, low, high)
    test_interval_source: str = ""
    known_outcomes: dict[int, int] = field(default_factory=dict)
    brier: dict[int, float] = field(default_factory=dict)
    # W -> (mean prediction, observed share that continued) per octile of the prediction; horizons with few outcomes
    # have none
    calibration: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    note: str = ""

    def judged(self, w: int) -> bool:
        return self.known_outcomes.get(w, 0) >= MIN_KNOWN_OUTCOMES and np.isfinite(self.realized.get(w, (np.nan,))[0])

    @property
    def below_test(self) -> list[int]:
        """Horizons whose realized interval lies wholly below the test interval's lower end."""
        return [
            w
            for w in self.horizons
            if self.judged(w)
            and w in self.test
            and np.isfinite(self.test[w][1])
            and self.realized[w][2] < self.test[w][1]
        ]


DRIFT_COLUMNS = {
    "day": "date not null",
    "model_name": "varchar not null",
    "model_version": "bigint not null",
    "rank": "integer",
    "input": "varchar",
    "psi": "double",
    "psi_limit": "double",
    "n_effective": "double",
    "judged": "boolean",
    "not_judged_because": "varchar",
    "drifted": "boolean",
    "edges": "double[]",
    "reference_shares": "double[]",
    "day_shares": "double[]",
    "classifications": "bigint",
    "volunteer_days": "bigint",
    "psi_threshold": "double",
    "min_rows": "bigint",
    "not_computed_because": "varchar",
    "checked_at": "timestamptz not null",
}
REALIZED_COLUMNS = {
    "day": "date not null",
    "model_name": "varchar not null",
    "model_version": "bigint not null",
    "horizon_minutes": "integer not null",
    "labelled_day": "date",
    "roc_auc": "double",
    "roc_auc_low": "double",
    "roc_auc_high": "double",
    "test_roc_auc": "double",
    "test_roc_auc_low": "double",
    "test_roc_auc_high": "double",
    "test_interval_source": "varchar",
    "known_outcomes": "bigint",
    "brier": "double",
    "calibration_predicted": "double[]",
    "calibration_observed": "double[]",
    "not_computed_because": "varchar",
    "checked_at": "timestamptz not null",
}


def number(value) -> float | None:
    """A float for the table: NULL for NaN (not computed)."""
    return None if value is None or np.isnan(value) else float(value)


def known(value) -> float:
    return float("nan") if value is None else float(value)


def replace_rows(con, table: str, columns: dict[str, str], key: tuple, rows: list[dict]) -> None:
    """Replace the rows of (day, model_name, model_version) = `key` in `table` by `rows`, in one transaction."""
    con.execute(f"create table if not exists {table} ({', '.join(f'{c} {t}' for c, t in columns.items())})")
    names = list(columns)
    con.execute("begin transaction")
    try:
        con.execute(f"delete from {table} where day = ? and model_name = ? and model_version = ?", list(key))
        if rows:
            con.executemany(
                f"insert into {table} ({', '.join(names)}) values ({', '.join('?' for _ in names)})",
                [[row.get(name) for name in names] for row in rows],
            )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def stored_rows(con, table: str, day: dt.date, model_name: str, model_version: int, order: str) -> list[dict]:
    """The rows of `table` for the key, as dicts; [] when the table does not exist (no check has run here)."""
    (exists,) = con.execute("select count(*) from duckdb_tables() where table_name = ?", [table]).fetchone()
    if not exists:
        return []
    cursor = con.execute(
        f"select * from {table} where day = ? and model_name = ? and model_version = ? order by {order}",
        [day, model_name, int(model_version)],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# --------------------------------------------------------------------------- feature_drift


def store_drift(
    con, day: dt.date, model_name: str, model_version: int, result: DriftResult | None, why: str = ""
) -> None:
    """Store the drift check's result (or why it was not computed) for the partition `day` and the version."""
    now = dt.datetime.now(dt.UTC)
    key = (day, model_name, int(model_version))
    if result is None:
        rows = [{"day": day, "model_name": model_name, "model_version": int(model_version),
                 "not_computed_because": why, "checked_at": now}]  # fmt: skip
    else:
        rows = [
            {
                "day": day,
                "model_name": model_name,
                "model_version": int(model_version),
                "rank": rank,
                "input": d.name,
                "psi": d.psi,
                "psi_limit": d.limit,
                "n_effective": d.n_effective,
                "judged": d.judged,
                "not_judged_because": d.why_not_judged,
                "drifted": d.drifted,
                "edges": d.edges.tolist(),
                "reference_shares": d.reference_shares.tolist(),
                "day_shares": d.day_shares.tolist(),
                "classifications": result.n_rows,
                "volunteer_days": result.n_volunteer_days,
                "psi_threshold": result.threshold,
                "min_rows": result.min_rows,
                "checked_at": now,
            }  # fmt: skip
            for rank, d in enumerate(result.inputs, 1)
        ]
    replace_rows(con, DRIFT_TABLE, DRIFT_COLUMNS, key, rows)


def read_drift(con, day: dt.date, model_name: str, model_version: int) -> tuple[DriftResult | None, str] | None:
    """(the stored DriftResult, '') or (None, why it was not computed); None when the check has not run."""
    rows = stored_rows(con, DRIFT_TABLE, day, model_name, model_version, "rank nulls first")
    if not rows:
        return None
    if rows[0]["input"] is None:
        return None, rows[0]["not_computed_because"]
    inputs = [
        InputDrift(
            name=row["input"],
            psi=row["psi"],
            limit=row["psi_limit"],
            n_effective=row["n_effective"],
            judged=row["judged"],
            why_not_judged=row["not_judged_because"],
            edges=np.asarray(row["edges"], dtype=np.float64),
            reference_shares=np.asarray(row["reference_shares"], dtype=np.float64),
            day_shares=np.asarray(row["day_shares"], dtype=np.float64),
        )
        for row in rows
    ]
    first = rows[0]
    result = DriftResult(
        inputs, n_rows=first["classifications"], n_volunteer_days=first["volunteer_days"],
        threshold=first["psi_threshold"], min_rows=first["min_rows"],
    )  # fmt: skip
    return result, ""


# --------------------------------------------------------------------------- realized_quality


def store_realized(con, partition_day: dt.date, model_name: str, model_version: int, result: RealizedQuality) -> None:
    """Store a RealizedQuality for the partition `partition_day` and the version, one row a horizon."""
    now = dt.datetime.now(dt.UTC)
    nan3 = (float("nan"),) * 3
    rows = []
    for w in result.horizons:
        realized, test = result.realized.get(w, nan3), result.test.get(w, nan3)
        predicted, observed = result.calibration.get(w, ((), ()))
        rows.append(
            {
                "day": partition_day,
                "model_name": model_name,
                "model_version": int(model_version),
                "horizon_minutes": w,
                "labelled_day": result.day,
                "roc_auc": number(realized[0]),
                "roc_auc_low": number(realized[1]),
                "roc_auc_high": number(realized[2]),
                "test_roc_auc": number(test[0]),
                "test_roc_auc_low": number(test[1]),
                "test_roc_auc_high": number(test[2]),
                "test_interval_source": result.test_interval_source,
                "known_outcomes": result.known_outcomes.get(w),
                "brier": number(result.brier.get(w)),
                "calibration_predicted": [float(v) for v in predicted],
                "calibration_observed": [float(v) for v in observed],
                "not_computed_because": result.note or None,
                "checked_at": now,
            }  # fmt: skip
        )
    replace_rows(con, REALIZED_TABLE, REALIZED_COLUMNS, (partition_day, model_name, int(model_version)), rows)


def read_realized(con, partition_day: dt.date, model_name: str, model_version: int) -> RealizedQuality | None:
    """The stored RealizedQuality of the partition and version; None when the check has not run."""
    rows = stored_rows(con, REALIZED_TABLE, partition_day, model_name, model_version, "horizon_minutes")
    if not rows:
        return None
    first = rows[0]
    result = RealizedQuality(
        first["labelled_day"], f"{model_name} v{model_version}", [row["horizon_minutes"] for row in rows],
        test_interval_source=first["test_interval_source"] or "", note=first["not_computed_because"] or "",
    )  # fmt: skip
    for row in rows:
        w = row["horizon_minutes"]
        if row["test_roc_auc"] is not None:
            result.test[w] = (row["test_roc_auc"], known(row["test_roc_auc_low"]), known(row["test_roc_auc_high"]))
        if row["known_outcomes"] is not None:
            result.known_outcomes[w] = row["known_outcomes"]
            result.realized[w] = (known(row["roc_auc"]), known(row["roc_auc_low"]), known(row["roc_auc_high"]))
        if row["brier"] is not None:
            result.brier[w] = row["brier"]
        if row["calibration_predicted"]:
            result.calibration[w] = (
                np.asarray(row["calibration_predicted"], dtype=np.float64),
                np.asarray(row["calibration_observed"], dtype=np.float64),
            )
    return result
