"""Monitoring: does the champion still work, and does today's data look like what it learned from?

Two asset checks on `user_predictions`, both WARN (they never stop the
scoring), both partitioned like it, so each scored day gets its verdict. Both
judge the model version that scored the day (the predictions file names it;
the current champion for a day without volunteers):

* `feature_drift`: PSI of every model input over the scored day's
  classifications against the reference stored with the champion
  (drift.py explains the statistic, the 0.25 threshold, the noise floor and
  which inputs are not judged, and why).
* `realized_quality`: for the latest day (on or before the partition) whose
  outcomes are all known, the ROC-AUC of the champion's predictions for every
  classification of that day, with a volunteer-level bootstrap interval,
  against the champion's test interval. It does not pass when the day's whole
  interval lies below the test interval (below its lower end, or below the
  test estimate when the run logged no interval): one day holds few
  volunteers, and a point estimate below the test interval happens on
  ordinary days by chance.

Why every classification of that day, and not just the nightly file's rows:
the file holds each volunteer's *last* classification of the day, which is
almost always the end of a session (on the sample 0.4% of them continue), so
an ROC-AUC over those rows says next to nothing and is not what the test
interval measured. The champion scores the day's classifications exactly as
the nightly scoring and the online server would (same windows, same model).

One computation per scored day: each check stores what it computed in the
warehouse (results.py: tables `feature_drift` and `realized_quality`, keyed by
the day and the model version) before it returns, and the morning report
shows those stored figures. The checks are `blocking` for that reason alone:
Dagster then runs them before the assets downstream of `user_predictions`
(the report) in the same run. Their severity is WARN, so a failed check never
stops the report; a check that raises (a table missing) does.
"""

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np

from engagement_pipeline.model.evaluation import auc_with_interval
from engagement_pipeline.model.registry import ChampionVersion, NoChampionError, find_champion, registered_version
from engagement_pipeline.model.windows import FeatureMatrix, gather_windows, load_feature_matrix
from engagement_pipeline.monitoring.drift import (
    MIN_ROWS,
    PSI_THRESHOLD,
    DriftResult,
    NoDriftReferenceError,
    drift_table_markdown,
    load_drift_reference,
    matrix_drift,
)
from engagement_pipeline.monitoring.results import (
    MIN_KNOWN_OUTCOMES,
    RealizedQuality,
    store_drift,
    store_realized,
)
from engagement_pipeline.partitions import daily_partitions
from engagement_pipeline.resources import Storage, Tracking, Warehouse

# Partitioned asset checks are a preview feature of Dagster 1.13, which says so on every load of the code
# location (and every `engagement` command): README says it once, the console need not.
warnings.filterwarnings(
    "ignore",
    message="Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    category=dg.PreviewWarning,
)

MICROS_PER_MINUTE = 60_000_000
MIN_CALIBRATION_OUTCOMES = 20  # known outcomes a horizon needs for its calibration points
DAY = dt.timedelta(days=1)


# --------------------------------------------------------------------------- reading a day


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start, start + DAY


MONITORED_TABLES = ("classifications", "features", "sessions", "labels")  # what the checks and the report read


def require_tables(con, day, tables: tuple[str, ...] = MONITORED_TABLES, reader: str = "the report and checks") -> None:
    """MissingUpstreamError naming the assets to materialize first, when the warehouse lacks a table read here."""
    from engagement_pipeline.transform.sql_models import MissingUpstreamError

    present = {name for (name,) in con.execute("select table_name from duckdb_tables()").fetchall()}
    missing = [name for name in tables if name not in present]
    if missing:
        raise MissingUpstreamError(
            f"The warehouse has no {', '.join(missing)} table yet, which {reader} of {day} read: "
            f"materialize {', '.join(f'`{name}`' for name in missing)} first (in the Dagster UI, select "
            f"{'it' if len(missing) == 1 else 'them'} and Materialize, or run `engagement run --exports DIR`)."
        )


def read_day_inputs(con, day: dt.date) -> FeatureMatrix:
    """Every classification of `day` (UTC) as a FeatureMatrix: the rows the champion scored inputs for."""
    start, end = day_bounds(day)
    return load_feature_matrix(con, where_sql="created_at >= ? and created_at < ?", params=[start, end])


def latest_labelled_day(con, on_or_before: dt.date, horizons: list[int]) -> dt.date | None:
    """The latest day <= `on_or_before` with classifications whose outcomes are all known by now.

    An outcome at t for horizon W is decided by data_end >= t + 2W (CONTRACT.md:
    a "stops" needs the session's end e < t + W and W quiet minutes after it),
    so a day is complete once data_end reaches its end plus twice the largest horizon.
    """
    data_end = con.execute("select max(created_at) from classifications").fetchone()[0]
    if data_end is None:
        return None
    last_complete = (data_end - dt.timedelta(minutes=2 * max(horizons)) - DAY).date()
    bound = min(on_or_before, last_complete)
    (latest,) = con.execute(
        "select max(created_at) from features where created_at < ?", [day_bounds(bound)[1]]
    ).fetchone()
    return latest.astimezone(dt.UTC).date() if latest is not None else None


@dataclass
class LabelledDay:
    """A day's classifications with the history their windows need, and their outcomes."""

    day: dt.date
    matrix: FeatureMatrix
    rows: np.ndarray  # rows of `matrix` made on `day`
    horizons: list[int]
    labels: np.ndarray  # [len(rows), H]: 1 continues, 0 stops, NaN unknown


def read_labelled_day(con, day: dt.date, window: int, horizons: list[int]) -> LabelledDay:
    """The day's classifications, each user's `window` earlier ones (for the windows), and their labels."""
    start, end = day_bounds(day)
    matrix = load_feature_matrix(
        con,
        where_sql="""classification_id in (
            select classification_id from features
            where created_at < ? and user_key in (
                select distinct user_key from features where created_at >= ? and created_at < ?
            )
            qualify created_at >= ?
                or row_number() over (
                    partition by user_key, created_at >= ? order by created_at desc, classification_id desc
                ) <= ?
        )""",
        params=[end, start, end, start, start, window],
    )
    start_us = int(start.timestamp() * 1_000_000)
    rows = np.flatnonzero(matrix.created_at >= start_us)
    labels = np.full((len(rows), len(horizons)), np.nan)
    if len(rows):
        con.register("realized_ids", {"classification_id": matrix.classification_id[rows]})
        try:
            found = con.execute(
                "select classification_id, horizon_minutes, continues::double as continues from labels "
                "where classification_id in (select classification_id from realized_ids)"
            ).fetchnumpy()
        finally:
            con.unregister("realized_ids")
        order = np.argsort(matrix.classification_id[rows])
        at = order[np.searchsorted(matrix.classification_id[rows], found["classification_id"], sorter=order)]
        for h, w in enumerate(horizons):
            mine = found["horizon_minutes"] == w
            labels[at[mine], h] = found["continues"][mine]
    return LabelledDay(day, matrix, rows, horizons, labels)


def version_that_scored(file: Path, tracking: Tracking) -> tuple[ChampionVersion, str]:
    """The registered version named in the day's predictions file (its model_name / model_version columns), and a
    note when the file names none (an empty day: then the current champion, said so)."""
    import pyarrow.parquet as pq

    if not file.exists():
        raise FileNotFoundError(f"{file} does not exist: materialize `user_predictions` for that day first")
    table = pq.read_table(file, columns=["model_name", "model_version"]).to_pydict()
    scored_by = sorted(set(zip(table["model_name"], table["model_version"])))
    if len(scored_by) > 1:
        raise ValueError(f"{file}: rows scored by more than one model version ({scored_by})")
    if not scored_by:
        return find_champion(tracking), " (no volunteer that day: the current champion)"
    return registered_version(tracking, *scored_by[0]), ""


# --------------------------------------------------------------------------- realized ROC-AUC of a day


def realized_intervals(
    labels: np.ndarray, p: np.ndarray, volunteer: np.ndarray, horizons: list[int]
) -> tuple[dict[int, tuple[float, float, float]], dict[int, int]]:
    """Per horizon: (ROC-AUC, 95% low, high) with the volunteer-level bootstrap of evaluation.py (its default
    resamples and seed, as training's test intervals), and the number of known outcomes."""
    realized, known_outcomes = {}, {}
    for h, w in enumerate(horizons):
        y = labels[:, h]
        known_outcomes[w] = int((~np.isnan(y)).sum())
        realized[w] = auc_with_interval(y, p[:, h], volunteer)
    return realized, known_outcomes


def test_interval(client, run_id: str, horizons: list[int]) -> tuple[dict[int, tuple[float, float, float]], str]:
    """The champion's test ROC-AUC per horizon, with `_ci_low`/`_ci_high` when the run logged them."""
    metrics = client.get_run(run_id).data.metrics
    out, sources = {}, set()
    for w in horizons:
        name = f"test_roc_auc_{w}m"
        if name not in metrics:
            continue
        estimate = metrics[name]
        if f"{name}_ci_low" in metrics:
            out[w] = (estimate, metrics[f"{name}_ci_low"], metrics.get(f"{name}_ci_high", estimate))
            sources.add(f"{name}_ci_low/_ci_high (the run's bootstrap interval)")
        else:
            out[w] = (estimate, estimate, estimate)
            sources.add(f"{name} itself: the run logged no interval")
    return out, "; ".join(sorted(sources)) or "the champion's run logged no test ROC-AUC"


def calibration_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean prediction, observed share that continued) per octile of the prediction over the known outcomes of
    one horizon (`y` NaN = unknown); None with fewer than MIN_CALIBRATION_OUTCOMES of them."""
    known = ~np.isnan(y)
    if known.sum() < MIN_CALIBRATION_OUTCOMES:
        return None
    y, p = y[known], p[known]
    edges = np.unique(np.quantile(p, np.linspace(0, 1, 9)))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    count = np.bincount(bins)
    filled = count > 0
    return np.bincount(bins, p)[filled] / count[filled], np.bincount(bins, y)[filled] / count[filled]


def realized_quality(
    con_factory, tracking: Tracking, on_or_before: dt.date, version: ChampionVersion | None = None
) -> RealizedQuality:
    """Realized ROC-AUC, Brier and calibration of `version` (default: the champion) on the latest labelled day
    <= `on_or_before`.

    `con_factory()` is a context manager giving a warehouse connection (held
    only while reading); the model loads afterwards.
    """
    from engagement_pipeline.model.evaluation import binary_metrics
    from engagement_pipeline.model.registry import load_model

    version = version or find_champion(tracking)
    model = f"{version.name} v{version.version}"
    with con_factory() as con:
        require_tables(con, on_or_before)
        day = latest_labelled_day(con, on_or_before, version.horizons)
        data = read_labelled_day(con, day, version.window, version.horizons) if day else None
    client = tracking.client()
    run_id = client.get_model_version(version.name, str(version.version)).run_id
    test, source = test_interval(client, run_id, version.horizons) if run_id else ({}, "no training run")
    result = RealizedQuality(day, model, version.horizons, test=test, test_interval_source=source)
    if data is None or not len(data.rows):
        result.note = f"no day on or before {on_or_before} has classifications whose outcomes are all known yet"
        return result
    if data.matrix.feature_names != version.feature_names:
        result.note = f"{model} was trained on other inputs than today's features table: not evaluated"
        return result
    champion = load_model(version)
    p = np.concatenate(
        [champion.predict(gather_windows(data.matrix, data.rows[i : i + 8192], version.window))
         for i in range(0, len(data.rows), 8192)]
    )  # fmt: skip
    volunteer = data.matrix.user_start[data.rows]
    result.realized, result.known_outcomes = realized_intervals(data.labels, p, volunteer, version.horizons)
    for h, w in enumerate(version.horizons):
        known = ~np.isnan(data.labels[:, h])
        if known.any():
            result.brier[w] = binary_metrics(data.labels[known, h], p[known, h])["brier"]
        points = calibration_points(data.labels[:, h], p[:, h])
        if points is not None:
            result.calibration[w] = points
    return result


def realized_words(result: RealizedQuality) -> str:
    """One line for the logs, e.g. "ROC-AUC 10m 0.576 [0.467, 0.791] (1,204 known outcomes), 20m ..."."""
    parts = []
    for w in result.horizons:
        estimate, low, high = result.realized.get(w, (np.nan,) * 3)
        known = f"{result.known_outcomes.get(w, 0):,} known outcomes"
        parts.append(
            f"{w}m {estimate:.3f} [{low:.3f}, {high:.3f}] ({known})"
            if np.isfinite(estimate)
            else f"{w}m none ({known})"
        )
    return "ROC-AUC " + ", ".join(parts)


def realized_markdown(result: RealizedQuality) -> str:
    lines = [
        "| horizon | realized ROC-AUC [95%] | test ROC-AUC [interval] | known outcomes |",
        "| --- | --- | --- | --- |",
    ]
    for w in result.horizons:
        r = result.realized.get(w, (np.nan,) * 3)
        t = result.test.get(w, (np.nan,) * 3)
        lines.append(
            f"| {w} min | {r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}] | {t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}] "
            f"| {result.known_outcomes.get(w, 0):,} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- drift of a day


def day_drift_for_champion(
    con, tracking: Tracking, day: dt.date, version: ChampionVersion | None = None
) -> tuple[DriftResult | None, str, str]:
    """PSI of the day's inputs against the reference of `version` (default: the champion): (result or None,
    model, why when None)."""
    version = version or find_champion(tracking)
    model = f"{version.name} v{version.version}"
    try:
        reference = load_drift_reference(tracking.client(), version.name, version.version)
    except NoDriftReferenceError as error:
        return None, model, str(error)
    matrix = read_day_inputs(con, day)
    if matrix.feature_names != version.feature_names:
        return None, model, f"{model} was trained on other inputs than today's features table"
    return matrix_drift(reference, matrix), model, ""


# --------------------------------------------------------------------------- the asset checks


def not_judged(description: str, metadata: dict | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.WARN, description=f"Not judged: {description}",
        metadata=metadata or {},
    )  # fmt: skip


def scoring_version(storage: Storage, tracking: Tracking, day: str) -> ChampionVersion:
    """The version that scored `day` (its predictions file), or NoChampionError / FileNotFoundError saying why not."""
    return version_that_scored(storage.prediction_file(day), tracking)[0]


@dg.asset_check(
    asset=dg.AssetKey("user_predictions"),
    name="feature_drift",
    partitions_def=daily_partitions,
    blocking=True,  # runs before the report, which shows what it stored; WARN never blocks (module docstring)
    description=(
        f"WARN when a model input's population stability index on the scored day, against the reference stored "
        f"with the model version that scored it, exceeds {PSI_THRESHOLD} and the noise floor of that day's sample "
        "size. Inputs that a single day cannot match by construction (weekday) or that grow with calendar time "
        f"(history so far) are not judged; a day with fewer than {MIN_ROWS} classifications is not judged. "
        "Stores its figures in the warehouse table `feature_drift`, which the report shows."
    ),
)
def feature_drift(context: dg.AssetCheckExecutionContext, warehouse: Warehouse, tracking: Tracking, storage: Storage):
    day = dt.date.fromisoformat(context.partition_key)
    try:
        version = scoring_version(storage, tracking, context.partition_key)
    except (NoChampionError, FileNotFoundError) as error:
        context.log.warning(f"feature_drift not judged for {day}: {error}")
        return not_judged(str(error), {"day": str(day)})
    with warehouse.connect(log=context.log) as con:
        result, model, why = day_drift_for_champion(con, tracking, day, version)
        store_drift(con, day, version.name, version.version, result, why)
    if result is None:
        context.log.warning(f"feature_drift not judged for {day}: {why}")
        return not_judged(why, {"model": model, "day": str(day)})
    offending = result.offending
    listing = ", ".join(f"{d.name} ({d.psi:.2f} > {d.limit:.2f})" for d in offending)
    if not result.enough_rows:
        description = f"{result.n_rows} classifications on {day}: fewer than {MIN_ROWS}, not judged."
    elif offending:
        description = f"{len(offending)} input(s) drifted on {day}: {listing}"
    else:
        description = f"No judged input above its limit on {day} (max PSI {result.max_psi:.3f})."
    context.log.info(f"feature_drift {day}: {description}")
    return dg.AssetCheckResult(
        passed=not offending,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "model": model,
            "day": str(day),
            "max_psi": dg.MetadataValue.float(float(result.max_psi)),
            "drifted_inputs": dg.MetadataValue.json([d.name for d in offending]),
            "classifications": result.n_rows,
            "volunteer_days": result.n_volunteer_days,
            "psi_threshold": dg.MetadataValue.float(PSI_THRESHOLD),
            "psi": dg.MetadataValue.md(drift_table_markdown(result, limit=len(result.inputs))),
        },
    )


@dg.asset_check(
    asset=dg.AssetKey("user_predictions"),
    name="realized_quality",
    partitions_def=daily_partitions,
    blocking=True,  # runs before the report, which shows what it stored; WARN never blocks (module docstring)
    description=(
        "WARN when, on the latest day (on or before the partition) whose outcomes are all known, the realized "
        "ROC-AUC of the model version that scored the partition (95% volunteer-level bootstrap interval over every "
        "classification of that day) lies wholly below its test interval, for any horizon. Stores its figures in "
        "the warehouse table `realized_quality`, which the report shows."
    ),
)
def realized_quality_check(
    context: dg.AssetCheckExecutionContext, warehouse: Warehouse, tracking: Tracking, storage: Storage
):
    on_or_before = dt.date.fromisoformat(context.partition_key)
    try:
        version = scoring_version(storage, tracking, context.partition_key)
    except (NoChampionError, FileNotFoundError) as error:
        context.log.warning(f"realized_quality not judged for {on_or_before}: {error}")
        return not_judged(str(error))
    result = realized_quality(lambda: warehouse.connect(log=context.log), tracking, on_or_before, version)
    with warehouse.connect(log=context.log) as con:
        store_realized(con, on_or_before, version.name, version.version, result)
    below = result.below_test
    judged = [w for w in result.horizons if result.judged(w)]
    if result.note:
        description = f"Not judged: {result.note}."
    elif not judged:
        description = f"Not judged: fewer than {MIN_KNOWN_OUTCOMES} known outcomes of both kinds on {result.day}."
    elif below:
        parts = [
            f"{w} min {result.realized[w][0]:.3f} (interval up to {result.realized[w][2]:.3f}) "
            f"< test {result.test[w][1]:.3f}"
            for w in below
        ]
        description = f"Realized ROC-AUC on {result.day} below the test interval: " + "; ".join(parts)
    else:
        description = f"Realized ROC-AUC on {result.day} is within or above the test interval for {judged} min."
    # the one line of the day's realized quality in the run's log (and the `engagement` command's console)
    figures = f" {result.model}: {realized_words(result)}." if result.realized else ""
    context.log.info(f"realized_quality {on_or_before}: {description}{figures}")
    metadata = {
        "model": result.model,
        "labelled_day": str(result.day),
        "test_interval_source": result.test_interval_source,
        "quality": dg.MetadataValue.md(realized_markdown(result)),
    }
    for w in result.horizons:
        if w in result.realized:
            estimate, low, high = result.realized[w]
            metadata[f"realized_roc_auc_{w}m"] = dg.MetadataValue.float(float(estimate))
            metadata[f"realized_roc_auc_{w}m_ci_low"] = dg.MetadataValue.float(float(low))
            metadata[f"realized_roc_auc_{w}m_ci_high"] = dg.MetadataValue.float(float(high))
    return dg.AssetCheckResult(
        passed=not below,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


monitoring_checks = [feature_drift, realized_quality_check]
