"""Nightly scoring: one Parquet file of per-user predictions per UTC day, from the champion model.

For partition D, every user with at least one classification on D gets one
row, scored at their last classification before the end of D (`as_of`), with
the same `features` table and the same window code (`model/windows.py`) that
training used. The model (`model/registry.py`) is `models:/engagement-lstm@champion`, loaded through
MLflow's pyfunc flavor exactly as any other consumer would load it.

The file is written beside its final place and renamed into it: a reader sees
the old file or the new one, never half of one, and a failed run leaves the
previous file in place. The hidden temporaries of killed scoring runs, of any
day, are removed when the next one writes (`ops/atomic_files.py`).
"""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from engagement_pipeline.model import outage
from engagement_pipeline.model.evaluation import markdown_table
from engagement_pipeline.model.registry import Champion, find_champion, load_model
from engagement_pipeline.model.windows import FeatureMatrix, gather_windows, load_feature_matrix
from engagement_pipeline.monitoring.checks import require_tables
from engagement_pipeline.ops.atomic_files import remove_leftovers, replacing
from engagement_pipeline.partitions import daily_partitions
from engagement_pipeline.resources import Storage, Tracking, Warehouse


class ScoringConfig(dg.Config):
    batch_size: int = Field(8192, description="Windows per call of the model.")


def read_day(
    con, day_start: dt.datetime, day_end: dt.datetime, window: int
) -> tuple[FeatureMatrix, dict[str, np.ndarray]]:
    """The users active in [day_start, day_end) and their last `window` classifications before day_end."""
    con.execute(
        """
        create or replace temp table scoring_active_users as
        select user_key, count(*) as n_classifications, max(created_at) as last_classification_at
        from features
        where created_at >= ? and created_at < ?
        group by user_key
        """,
        [day_start, day_end],
    )
    active = con.execute(
        "select user_key, n_classifications, epoch_us(last_classification_at) as last_us "
        "from scoring_active_users order by user_key"
    ).fetchnumpy()
    matrix = load_feature_matrix(
        con,
        where_sql="""classification_id in (
            select classification_id from features
            where created_at < ? and user_key in (select user_key from scoring_active_users)
            qualify row_number() over (partition by user_key order by created_at desc, classification_id desc) <= ?
        )""",
        params=[day_end, window],
    )
    con.execute("drop table scoring_active_users")
    return matrix, active


def last_row_per_user(matrix: FeatureMatrix) -> np.ndarray:
    """Index of each user's last row (rows are ordered by user, then time)."""
    n = len(matrix)
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = matrix.user_start[1:] != matrix.user_start[:-1]
    return np.flatnonzero(is_last)


def predictions_table(champion: Champion, matrix: FeatureMatrix, active: dict, as_of: dt.datetime, batch_size: int):
    """A pyarrow Table in the contract's schema, one row per active user."""
    import pyarrow as pa

    rows = last_row_per_user(matrix)
    rows = rows[np.argsort(matrix.user_key[rows], kind="stable")]  # in `active`'s order (by user_key)
    if not np.array_equal(matrix.user_key[rows], active["user_key"]):
        raise AssertionError("users in the feature windows differ from the users active that day")
    probabilities = np.empty((len(rows), len(champion.horizons)), dtype=np.float64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        probabilities[start : start + len(chunk)] = champion.predict(gather_windows(matrix, chunk, champion.window))

    utc_us = pa.timestamp("us", tz="UTC")
    n = len(rows)
    columns = {
        "user_key": pa.array(active["user_key"], type=pa.string()),
        "as_of": pa.array(np.full(n, int(as_of.timestamp() * 1_000_000), dtype=np.int64), type=utc_us),
        "last_classification_at": pa.array(np.asarray(active["last_us"], dtype=np.int64), type=utc_us),
        "n_classifications": pa.array(np.asarray(active["n_classifications"], dtype=np.int64), type=pa.int64()),
    }
    for j, horizon in enumerate(champion.horizons):
        columns[f"p_continue_{horizon}m"] = pa.array(probabilities[:, j], type=pa.float64())
    scored_at = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    columns["model_name"] = pa.array([champion.name] * n, type=pa.string())
    columns["model_version"] = pa.array(np.full(n, champion.version, dtype=np.int64), type=pa.int64())
    columns["scored_at"] = pa.array(np.full(n, scored_at, dtype=np.int64), type=utc_us)
    return pa.table(columns)


def write_atomically(table, target: Path) -> None:
    """Write beside `target`, fsync, then rename over it: readers see the old file or the new one."""
    import pyarrow.parquet as pq

    with replacing(target, "predictions file") as temporary:
        pq.write_table(table, temporary)


def probability_summary(table, horizons: list[int]) -> str:
    quantiles = (0.05, 0.25, 0.5, 0.75, 0.95)
    header = ["horizon", "mean", *(f"q{int(q * 100)}" for q in quantiles)]
    rows = []
    for horizon in horizons:
        values = table.column(f"p_continue_{horizon}m").to_numpy()
        if len(values) == 0:
            rows.append([f"{horizon}m", *["-"] * (len(quantiles) + 1)])
            continue
        rows.append([f"{horizon}m", float(values.mean()), *(float(q) for q in np.quantile(values, quantiles))])
    return markdown_table(header, rows, digits=3)


_UTC = "timestamp[us, tz=UTC]"
# The UI's column schema of one day's file (CONTRACT.md, "Output: predictions"), for the default horizons.
PREDICTIONS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("user_key", "string", description="the volunteer (user_id, or a salted hash of user_name)"),
        dg.TableColumn("as_of", _UTC, description="the end of the partition day"),
        dg.TableColumn("last_classification_at", _UTC, description="the user's last classification on or before as_of"),
        dg.TableColumn("n_classifications", "int64", description="the user's classifications on that day"),
        *(
            dg.TableColumn(
                f"p_continue_{minutes}m",
                "double",
                description=f"P(still classifying {minutes} min after last_classification_at); one per horizon",
            )
            for minutes in (10, 20, 30)
        ),
        dg.TableColumn("model_name", "string", description="registered model that scored (engagement-lstm)"),
        dg.TableColumn("model_version", "int64", description="its version: the champion at scoring time"),
        dg.TableColumn("scored_at", _UTC),
    ]
)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetKey("features"), dg.AssetKey("engagement_model")],
    group_name="scoring",
    kinds={"parquet", "mlflow", "pytorch"},
    owners=["team:engagement"],
    metadata={"dagster/column_schema": PREDICTIONS_SCHEMA},
    description=(
        "Per-user predictions for one UTC day: for every volunteer active that day, the champion model's "
        "probability of still working 10/20/30 minutes after their last classification. "
        "$ENGAGEMENT_HOME/predictions/date=YYYY-MM-DD/predictions.parquet, replaced atomically."
    ),
    check_specs=[
        dg.AssetCheckSpec("one_row_per_user", asset="user_predictions", description="user_key is unique in the file."),
        dg.AssetCheckSpec(
            "probabilities_in_unit_interval",
            asset="user_predictions",
            description="Every p_continue_* is within [0, 1].",
        ),
        dg.AssetCheckSpec(
            "row_count_matches_active_users",
            asset="user_predictions",
            description="Rows equal the users with a classification that day, counted afresh from `classifications`.",
        ),
        dg.AssetCheckSpec(
            "day_has_active_volunteers",
            asset="user_predictions",
            description=(
                "Warns when the scored day has no classification at all (an empty file is written): "
                "a day outside the data, or exports that stopped arriving."
            ),
        ),
    ],
)
def user_predictions(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    warehouse: Warehouse,
    tracking: Tracking,
    storage: Storage,
):
    day_span = context.partition_time_window  # the UTC day; `version.window` is K, the classifications per window
    day = context.partition_key

    # The MLflow server gone (the champion's lookup, its model's download): said plainly, nothing written.
    def server_gone():
        return outage.said_plainly(tracking, context.log, lambda uri, why: outage.scoring_outage_message(uri, why, day))

    with server_gone():
        version = find_champion(tracking)
    context.log.info(f"Scoring {day} with {version.name} v{version.version}")

    # The model loads (seconds) in a thread while DuckDB reads the day (both release the GIL).
    with server_gone(), ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(load_model, version)
        with warehouse.connect(log=context.log) as con:
            require_tables(con, day, ("classifications", "features"), "the scoring")
            matrix, active = read_day(con, day_span.start, day_span.end, version.window)
            active_users, first_day, last_day = con.execute(
                "select count(distinct user_key) filter (created_at >= ? and created_at < ?),"
                " min(created_at)::date::varchar, max(created_at)::date::varchar from classifications",
                [day_span.start, day_span.end],
            ).fetchone()
        data_span = f"{first_day} to {last_day}" if first_day else "no days (nothing ingested)"
        champion = loading.result()
    if matrix.feature_names != champion.feature_names:
        raise ValueError(
            f"The champion ({champion.name} v{champion.version}) was trained on features {champion.feature_names}, "
            f"but the features table now has {matrix.feature_names}: materialize `engagement_model` again."
        )

    table = predictions_table(champion, matrix, active, day_span.end, config.batch_size)
    target = storage.prediction_file(day)
    for leftover in remove_leftovers(storage.predictions.glob("date=*"), target.name):
        context.log.info(f"Removed {leftover}, left by a scoring run that was killed")
    write_atomically(table, target)
    context.log.info(f"{table.num_rows:,} users scored -> {target}")
    if not active_users:
        context.log.warning(f"No volunteer classified on {day} (the data spans {data_span}): wrote an empty file.")

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    written = pq.read_table(target)  # the checks judge the file as written, not the table in memory
    distinct_users = pc.count_distinct(written.column("user_key")).as_py()
    probabilities = [written.column(f"p_continue_{h}m").to_numpy() for h in champion.horizons]
    in_unit_interval = all(bool(np.all((p >= 0) & (p <= 1))) for p in probabilities)  # NaN fails
    yield dg.MaterializeResult(
        metadata={
            "users_scored": table.num_rows,
            "data_span": data_span,
            "dagster/row_count": table.num_rows,
            "model_version": champion.version,
            "model_uri": f"models:/{champion.name}/{champion.version}",
            "path": dg.MetadataValue.path(str(target)),
            "probabilities": dg.MetadataValue.md(probability_summary(table, champion.horizons)),
        }
    )
    yield dg.AssetCheckResult(
        check_name="one_row_per_user",
        passed=distinct_users == written.num_rows,
        metadata={"rows": written.num_rows, "distinct_users": distinct_users},
    )
    yield dg.AssetCheckResult(check_name="probabilities_in_unit_interval", passed=in_unit_interval)
    yield dg.AssetCheckResult(
        check_name="row_count_matches_active_users",
        passed=written.num_rows == active_users,
        metadata={"rows": written.num_rows, "active_users": active_users},
    )
    yield dg.AssetCheckResult(
        check_name="day_has_active_volunteers",
        passed=active_users > 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"active_users": active_users, "data_span": data_span},
        description=None if active_users else f"No volunteer classified on {day}; the data spans {data_span}.",
    )
