"""Input drift: a reference of every model input, stored with the model version, and the PSI of a day against it.

The reference (`drift_reference`) is computed from the training rows when a
model is trained: per input, the interior edges of (up to) ten quantile bins
and the share of training rows in each bin, plus the share of missing values
(NaN, a bin of its own). It is a small JSON document, logged as the artifact
`drift_reference.json` of the training run (`log_drift_reference`), so it
belongs to the model version registered from that run (`load_drift_reference`).

The population stability index of a day's rows against it is

    PSI = sum over bins of (day share - reference share) * ln(day share / reference share),

with half a row added to every bin of both sides, so an empty bin costs a
finite amount. 0.1 is commonly read as "a small shift", 0.25 as "a shift
worth a look" (Siddiqi, Credit Risk Scorecards, 2006); `PSI_THRESHOLD` is
0.25.

Two kinds of inputs are not judged by PSI, on purpose, because they would
fire on ordinary days (see `NOT_JUDGED`):

* the day of the week: one day holds one or two weekdays (local clocks), the
  reference all seven, so their PSI is ~1.5 every single day;
* inputs that grow with calendar time (classifications, sessions and active
  minutes so far, days since first seen): as a project ages, its returning
  volunteers carry longer histories, so every later day sits above the
  training period. A shift in who comes (many new volunteers) still shows in
  the inputs that do not grow, like the previous session's length (missing
  for newcomers), which stay judged.

They are still drawn in the report (grey, "not judged"), so a person sees them.
A day with fewer than `MIN_ROWS` classifications is not judged either: with a
few dozen rows (from a handful of sessions) PSI is mostly noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

PSI_THRESHOLD = 0.25
N_BINS = 10
MIN_ROWS = 100
REFERENCE_ARTIFACT = "drift_reference.json"
REFERENCE_FORMAT = 1
MICROS_PER_DAY = 86_400_000_000
FAMILY_FALSE_ALARM = 0.01
NOT_JUDGED = {
    "weekday_sin": "the day of the week: one day holds one weekday, the reference all seven",
    "weekday_cos": "the day of the week: one day holds one weekday, the reference all seven",
    "is_weekend": "the day of the week: one day holds one weekday, the reference all seven",
    "log_classifications_so_far": "grows with calendar time (history so far)",
    "log_sessions_so_far": "grows with calendar time (history so far)",
    "log_active_minutes_so_far": "grows with calendar time (history so far)",
    "log_days_since_first_seen": "grows with calendar time (history so far)",
}


class NoDriftReferenceError(LookupError):
    pass


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: 0..len(edges) by the interior edges (right-closed at each edge), len(edges)+1 for NaN."""
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(edges, values, side="right")
    return np.where(np.isnan(values), len(edges) + 1, index)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows of `values` in each bin (the last bin is NaN)."""
    return np.bincount(bin_index(values, edges), minlength=len(edges) + 2).astype(np.float64)


def volunteer_days(user_start: np.ndarray, created_at_us: np.ndarray) -> np.ndarray:
    """An id per row for its (volunteer, UTC day): the groups whose rows are far from independent."""
    if len(user_start) == 0:
        return np.zeros(0, dtype=np.int64)
    day = np.asarray(created_at_us, dtype=np.int64) // MICROS_PER_DAY
    _, group = np.unique(np.stack([np.asarray(user_start, dtype=np.int64), day]), axis=1, return_inverse=True)
    return group.ravel().astype(np.int64)


def intraclass_correlation(values: np.ndarray, groups: np.ndarray) -> float:
    """One-way ANOVA ICC of `values` (NaN skipped) within `groups`, clipped to [0, 1]; 0 without repeats."""
    known = ~np.isnan(values)
    values, groups = values[known].astype(np.float64), groups[known]
    if len(values) < 3:
        return 0.0
    _, group, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    k, n = len(sizes), len(values)
    if k < 2 or k == n:
        return 0.0
    means = np.bincount(group, values) / sizes
    within = np.sum((values - means[group]) ** 2) / (n - k)
    between = np.sum(sizes * (means - values.mean()) ** 2) / (k - 1)
    m0 = (n - np.sum(sizes**2) / n) / (k - 1)  # the average group size, for unequal groups
    variance_between = (between - within) / m0
    total = variance_between + within
    return float(np.clip(variance_between / total, 0.0, 1.0)) if total > 0 else 0.0


def effective_size(group_sizes: np.ndarray, icc: float) -> float:
    """Kish's effective sample size of rows in groups of `group_sizes` with intraclass correlation `icc`.

    n / (1 + (m - 1) * icc), where m is the size-weighted mean group size
    (sum m_i^2 / n): one volunteer with 300 classifications in a day weighs
    on the shares like 300 rows but informs like far fewer.
    """
    sizes = np.asarray(group_sizes, dtype=np.float64)
    n = sizes.sum()
    if n == 0:
        return 0.0
    weighted_mean_size = float(np.sum(sizes**2) / n)
    return float(n / (1 + (weighted_mean_size - 1) * icc))


def group_sizes(groups: np.ndarray | None, n_rows: int) -> np.ndarray:
    return np.unique(groups, return_counts=True)[1] if groups is not None else np.ones(n_rows)


def drift_reference(
    X: np.ndarray,
    feature_names: list[str],
    n_bins: int = N_BINS,
    groups: np.ndarray | None = None,
    train_period_us: tuple[int, int] | None = None,
    rows: np.ndarray | None = None,
) -> dict:
    """Quantile bin edges, bin shares and intraclass correlation of every input over training rows `X` [N, F]
    (or its rows `rows`, read one column at a time: no copy of the whole matrix, in float64 or otherwise).

    Edges are the distinct interior quantiles of the non-missing values, so a
    binary input gets one edge and a constant one none; NaN is a bin of its
    own. `groups` (a volunteer-day id per row, see `volunteer_days`) give each
    input's intraclass correlation, which turns a day's rows into an effective
    sample size; without them rows count as independent. `train_period_us`
    (first and end microsecond of the training period) is kept for the report.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(
            f"X has shape {X.shape}, expected [rows, {len(feature_names)}] for {len(feature_names)} inputs"
        )
    inputs = {}
    for j, name in enumerate(feature_names):
        column = np.asarray(X[:, j] if rows is None else X[rows, j], dtype=np.float64)
        present = column[~np.isnan(column)]
        quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
        edges = np.unique(np.quantile(present, quantiles)) if len(present) else np.empty(0)
        counts = bin_counts(column, edges)
        inputs[name] = {
            "edges": [float(e) for e in edges],
            "shares": [float(s) for s in counts / max(counts.sum(), 1)],
            "icc": intraclass_correlation(column, groups) if groups is not None else 0.0,
            "mean": float(present.mean()) if len(present) else None,
            "missing_share": float(1 - len(present) / max(len(column), 1)),
        }
    n_rows = len(X) if rows is None else len(rows)
    sizes = group_sizes(groups, n_rows)
    reference = {
        "format": REFERENCE_FORMAT,
        "n_rows": int(n_rows),
        "n_groups": int(len(sizes)),
        "weighted_mean_group_size": float(np.sum(sizes.astype(np.float64) ** 2) / max(sizes.sum(), 1)),
        "n_bins": n_bins,
    }
    if train_period_us is not None:
        reference["train_period_us"] = [int(train_period_us[0]), int(train_period_us[1])]
    reference["inputs"] = inputs
    return reference


def drift_reference_for(matrix, rows: np.ndarray, train_end_us: int | None = None) -> dict:
    """The reference of the training rows `rows` of a FeatureMatrix, grouped by volunteer-day."""
    rows = np.asarray(rows)
    groups = volunteer_days(matrix.user_start[rows], matrix.created_at[rows])
    period = (int(matrix.created_at[rows].min()), int(train_end_us)) if len(rows) and train_end_us else None
    return drift_reference(matrix.X, matrix.feature_names, groups=groups, train_period_us=period, rows=rows)


def psi(reference_shares: np.ndarray, day_counts: np.ndarray, n_reference: float, n_day: float) -> float:
    """PSI of a day's bin counts against reference shares.

    Both sides are smoothed with half an observation per bin, in units of
    their effective sample sizes, so an empty bin costs a finite amount.
    """
    reference_shares = np.asarray(reference_shares, dtype=np.float64)
    day_counts = np.asarray(day_counts, dtype=np.float64)
    k = len(reference_shares)
    expected = (reference_shares * n_reference + 0.5) / (n_reference + 0.5 * k)
    day_shares = day_counts / day_counts.sum() if day_counts.sum() > 0 else day_counts
    actual = (day_shares * n_day + 0.5) / (n_day + 0.5 * k)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def noise_floor(n_bins_used: int, n_day: float, n_reference: float, n_inputs: int) -> float:
    """The PSI an unshifted day of effective size `n_day` exceeds with probability FAMILY_FALSE_ALARM / n_inputs.

    Between two samples of one distribution, PSI (a symmetric Kullback-Leibler
    divergence of binned shares) is about chi-square with bins - 1 degrees of
    freedom times (1/n_day + 1/n_reference). Dividing the false-alarm rate by
    the number of judged inputs keeps the chance that any input fires on an
    ordinary day under about 1%.
    """
    from scipy.stats import chi2

    if n_day <= 0:
        return float("inf")
    dof = max(n_bins_used - 1, 1)
    return float(chi2.ppf(1 - FAMILY_FALSE_ALARM / max(n_inputs, 1), dof) * (1 / n_day + 1 / max(n_reference, 1)))


@dataclass(frozen=True)
class InputDrift:
    name: str
    psi: float
    limit: float  # max(PSI_THRESHOLD, the noise floor at this day's effective sample size)
    n_effective: float
    judged: bool
    why_not_judged: str | None
    edges: np.ndarray
    reference_shares: np.ndarray
    day_shares: np.ndarray

    @property
    def drifted(self) -> bool:
        return self.judged and self.psi > self.limit


@dataclass(frozen=True)
class DriftResult:
    inputs: list[InputDrift]  # sorted by PSI, highest first
    n_rows: int
    n_volunteer_days: int
    threshold: float = PSI_THRESHOLD
    min_rows: int = MIN_ROWS

    @property
    def enough_rows(self) -> bool:
        return self.n_rows >= self.min_rows

    @property
    def offending(self) -> list[InputDrift]:
        """Judged inputs above their limit, highest PSI first (none on a day with too few rows)."""
        return [d for d in self.inputs if d.drifted] if self.enough_rows else []

    @property
    def max_psi(self) -> float:
        judged = [d.psi for d in self.inputs if d.judged]
        return max(judged) if judged else float("nan")


def day_drift(reference: dict, X_day: np.ndarray, feature_names: list[str], groups: np.ndarray | None = None):
    """PSI of every input of one day's rows `X_day` [n, F] (`groups`: volunteer-day ids) against `reference`."""
    missing = [name for name in feature_names if name not in reference["inputs"]]
    if missing:
        raise NoDriftReferenceError(f"the drift reference has no entry for inputs {missing}: retrain the model")
    n_rows = len(X_day)
    sizes = group_sizes(groups, n_rows)
    n_reference_rows = float(reference["n_rows"])
    reference_group_size = float(reference.get("weighted_mean_group_size", 1.0))
    n_judged = sum(name not in NOT_JUDGED for name in feature_names)
    out = []
    for j, name in enumerate(feature_names):
        entry = reference["inputs"][name]
        edges = np.asarray(entry["edges"], dtype=np.float64)
        shares = np.asarray(entry["shares"], dtype=np.float64)
        counts = bin_counts(X_day[:, j], edges)
        icc = float(entry.get("icc", 0.0))
        n_day = effective_size(sizes, icc)
        n_reference = n_reference_rows / (1 + (reference_group_size - 1) * icc)
        used = int(np.count_nonzero((shares > 0) | (counts > 0)))
        why = NOT_JUDGED.get(name)
        out.append(
            InputDrift(
                name=name,
                psi=psi(shares, counts, n_reference, n_day),
                limit=max(PSI_THRESHOLD, noise_floor(used, n_day, n_reference, n_judged)),
                n_effective=n_day,
                judged=why is None,
                why_not_judged=why,
                edges=edges,
                reference_shares=shares,
                day_shares=counts / max(counts.sum(), 1),
            )
        )
    out.sort(key=lambda d: (-d.psi, d.name))
    return DriftResult(out, n_rows=n_rows, n_volunteer_days=len(sizes))


def matrix_drift(reference: dict, matrix) -> DriftResult:
    """`day_drift` of every row of a FeatureMatrix holding one day's classifications."""
    return day_drift(reference, matrix.X, matrix.feature_names, volunteer_days(matrix.user_start, matrix.created_at))


def drift_table_markdown(result: DriftResult, limit: int = 12) -> str:
    lines = ["| input | PSI | limit | judged |", "| --- | --- | --- | --- |"]
    for d in result.inputs[:limit]:
        judged = "yes" if d.judged else "no: " + d.why_not_judged
        lines.append(f"| {d.name} | {d.psi:.3f} | {d.limit:.3f} | {judged} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- MLflow


def log_drift_reference(reference: dict) -> None:
    """Log the reference as `drift_reference.json` of the active MLflow run (the run that registers the version)."""
    import mlflow

    mlflow.log_dict(reference, REFERENCE_ARTIFACT)


def load_drift_reference(client, model_name: str, version: int) -> dict:
    """The reference logged with the run of `model_name` version `version`; NoDriftReferenceError if it has none."""
    import tempfile

    from mlflow.exceptions import MlflowException

    model_version = client.get_model_version(model_name, str(version))
    run_id = model_version.run_id or model_version.tags.get("run_id")
    if not run_id:
        raise NoDriftReferenceError(f"{model_name} v{version} names no training run: no drift reference")
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, folder)
            with open(path) as handle:
                return json.load(handle)
    except (MlflowException, OSError):
        raise NoDriftReferenceError(
            f"{model_name} v{version} (run {run_id}) has no {REFERENCE_ARTIFACT}: it was trained before drift "
            "references were stored. Materialize `engagement_model` to train a version that has one."
        ) from None
