"""The online road to `features`: raw export rows + the history snapshot -> the batch path's own features.

`OnlineFeatures.build` turns raw export rows (JSON, as `POST /invocations`
carries them) into the `features` rows of those classifications the way the
batch path does, with the batch path's own SQL; no feature is written twice:

1. The history snapshot (`history_snapshot.py`) is loaded once into an
   in-memory DuckDB, sorted by user so a lookup of a few volunteers reads a
   few blocks, and loaded again when the file is replaced (checked by
   `os.stat` on every request: the request after a refresh uses the new
   history; a request in flight finishes on the old one).
2. The request's rows are staged as the CSV reader stages them (a view
   `csv_rows` over the request body: text, `NA` and empty fields NULL) and
   typed, judged and hashed by the ingest's own `ingest/sql/parse_rows.sql`.
3. The stored history of the request's volunteers only (every feature of a
   classification uses that classification and the same user's earlier
   ones, so other users change nothing) plus the request's rows,
   deduplicated by `classification_id` as the ingest does (a stored row is
   the same event; within a request the first copy wins), then every `sql/`
   model `features` needs, verbatim, as materialized CTEs of one statement,
   in dependency order, and the matrix read off the end.

Why it is shaped this way: for a request of one volunteer the data is tiny
and DuckDB's parsing, binding and optimizing of each statement is most of
the cost, so the models run as one statement rather than one table each,
and that statement is planned once per connection and reused. DuckDB (2.0)
re-binds and re-optimizes a prepared statement on every EXECUTE when it
reads a table, but not when its data comes in as a parameter. So a small
request's rows (its volunteers' history and its own rows, a few hundred)
are gathered by one short statement into a connection variable, a list of
structs, and handed to the prepared models statement as its parameter:
`EXECUTE online_matrix(getvariable(...))` runs the kept plan (measured:
the models' step of one volunteer from ~27-35 to ~12 ms CPU). A large
request (over `KEPT_PLAN_MAX_ROWS` rows with its volunteers' stored ones,
e.g. a batch of 10,000) runs the same models over the tables directly,
planned for its own size: there the planning is a small share and a list
of a hundred thousand structs is not. The gathering itself tells the two
apart: it reads at most the limit and one more row, and leaves the list
NULL when there are more, so the kept plan returns nothing and the request
is planned. The list holds what `parsed_rows` holds of a row (the salted
user key, never `user_name`). Both roads are the same SQL text over the
same rows, and both are tested against the batch path. Each request works
on a connection (a cursor of the history's database) of its own, taken
from a pool: temp tables and variables are per connection, so concurrent
requests never see each other's rows.

`user_ip` is never extracted from the request (the JSON paths below do not
name it), and `user_name` only into the salted hash.
"""

import functools
import json
import os
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engagement_pipeline.ingest.files import PANOPTES_COLUMNS
from engagement_pipeline.ingest.load import sql_text
from engagement_pipeline.model.windows import KEY_COLUMNS, FeatureMatrix, matrix_from_arrow, ordered_features_sql
from engagement_pipeline.transform.sql_models import models_for

# The columns of `classifications` the ingest fills from `parsed_rows` (ingest/sql/insert_classifications.sql), provenance aside.
CLASSIFICATION_COLUMNS = (
    "classification_id", "user_key", "is_anonymous", "workflow_id", "workflow_version", "created_at",
    "started_at", "finished_at", "utc_offset_minutes", "device_class", "browser_session",
    "gold_standard", "expert", "subject_ids",
)  # fmt: skip
REQUEST_COLUMNS = tuple(c for c in PANOPTES_COLUMNS if c != "user_ip")  # user_ip is never read


class BadRequest(ValueError):
    """A request the scorer cannot use; the message names the record and the problem, never a value."""


class NoSnapshotError(RuntimeError):
    """The history snapshot has not been written yet."""


def _read_by(sql_texts: list[str], columns: tuple[str, ...]) -> tuple[str, ...]:
    """The `columns` some SQL text names (a name in a comment only costs reading a column for nothing)."""
    return tuple(c for c in columns if any(re.search(rf"\b{c}\b", sql) for sql in sql_texts))


KEPT_ROWS_VARIABLE = "online_classifications"  # a connection's own variable: its request's rows, as structs
# A request whose rows and its volunteers' stored rows number more than this runs the models over the tables,
# planned for its size. Measured on the benchmark's home: the kept plan is cheaper up to ~2,000 rows of one
# volunteer (761: 19 vs 28 ms CPU; 2,977: 33 vs 29) and ~800 of many (609: 26 vs 31 ms; 4,459: 69 vs 42).
KEPT_PLAN_MAX_ROWS = 1_500


@dataclass(frozen=True)
class OnlineSql:
    """The statements of the online road, written once from the SQL files (nothing here is a feature)."""

    request_view: str  # csv_rows: the request body as the CSV reader stages a file
    stage_sql: str  # the ingest's own parse step: csv_rows -> parsed_rows
    judge_sql: str  # how many rows, how many unusable (and why), the ids in request order
    features_sql: str  # history + parsed_rows -> every model `features` needs -> `features` rows
    keep_sql: str  # history + parsed_rows -> KEPT_ROWS_VARIABLE, the same rows as one list (NULL: over $1 rows)
    kept_features_template: str  # the models over the list parameter $1 (its type filled in per connection)
    model_columns: tuple[str, ...]  # what the history table keeps of the snapshot
    staged_columns: tuple[str, ...]  # what the staging reads of a request's rows

    def history_sql(self, snapshot: Path) -> str:
        columns = ", ".join(self.model_columns)
        path = "'" + str(snapshot).replace("'", "''") + "'"
        return f"create table history as select {columns} from read_parquet({path}) order by user_key, created_at"

    def kept_features_sql(self, list_type: str) -> str:
        """The models over the rows of a KEPT_ROWS_VARIABLE of `list_type` (DuckDB's own name of its type)."""
        return self.kept_features_template.replace("{list_type}", list_type)


def _models_over(classifications: str) -> str:
    """Every `sql/` model `features` needs, verbatim, as materialized CTEs over `classifications`, then features."""
    *upstream, features = models_for(["features"])
    if features.name != "features":
        raise AssertionError(f"`features` must come last in dependency order, not {features.name}")
    ctes = [("classifications", classifications), *((m.name, m.sql) for m in upstream)]
    with_clause = ",\n".join(f'"{name}" as materialized (\n{sql}\n)' for name, sql in ctes)
    return f"with {with_clause}\nselect * from (\n{features.sql}\n)"


@functools.cache
def online_sql() -> OnlineSql:
    """Written once, on the first request (importing this module reads no SQL)."""
    stage_sql = sql_text("parse_rows")
    models = models_for(["features"])
    model_columns = _read_by([model.sql for model in models], CLASSIFICATION_COLUMNS)
    staged_columns = _read_by([stage_sql], REQUEST_COLUMNS)

    # The request's columns arrive as an Arrow table `request_rows` (strings, in request order); the view
    # stages them as the CSV reader stages a file's. Only the columns the staging SQL reads are taken.
    fields = ", ".join(
        f"case when {c} in ('', 'NA') then null else {c} end as {c}" if c in staged_columns else f"null::varchar as {c}"
        for c in REQUEST_COLUMNS
    )
    request_view = f"create or replace temp view csv_rows as select {fields} from request_rows"
    # A row whose classification_id is stored as another volunteer's classification is refused: the
    # contract makes a stored id that same event, and the ingest would keep the stored copy.
    judge_sql = """
        with judged as (
            select
                p.rowid as position,
                p.classification_id,
                coalesce(
                    p.reason,
                    case when stored.user_key <> p.user_key
                        then 'classification_id is stored as another volunteer''s classification' end
                ) as reason
            from parsed_rows as p
            left join history as stored on p.classification_id = stored.classification_id
        )
        select
            count(*),
            count(reason),
            list(classification_id order by position),
            list('record ' || position || ': ' || reason order by position) filter (where reason is not null)
        from judged
    """
    columns = ", ".join(model_columns)
    # The request's volunteers' stored rows (copy 0) and the request's rows (copy 1, in request order) ...
    candidates = f"""
        select {columns}, 0 as copy_rank, 0::bigint as position
        from history where user_key in (select user_key from parsed_rows)
        union all
        select {columns}, 1 as copy_rank, rowid as position from parsed_rows
    """  # our own constant column names
    # ... of which each classification's first copy is the one the models see, as the ingest keeps the first.
    first_copies = (
        "select {columns} from ({rows}) "
        "qualify row_number() over (partition by classification_id order by copy_rank, position) = 1"
    )
    packed = ", ".join(f"{c} := {c}" for c in (*model_columns, "copy_rank", "position"))
    return OnlineSql(
        request_view=request_view,
        stage_sql=stage_sql,
        judge_sql=judge_sql,
        features_sql=_models_over(first_copies.format(columns=columns, rows=candidates)),
        # at most $1 + 1 rows are read: a volunteer with a long history costs no more than the limit
        keep_sql=(
            f"set variable {KEPT_ROWS_VARIABLE} = (select case when count(*) <= $1 then list(struct_pack({packed})) "
            f"end from (select * from ({candidates}) limit $1 + 1))"
        ),
        kept_features_template=_models_over(
            first_copies.format(columns=columns, rows="select unnest($1::{list_type}, recursive := true)")
        ),
        model_columns=model_columns,
        staged_columns=staged_columns,
    )


def parse_records(body: bytes | str) -> list[dict]:
    """The records of a `{"dataframe_records": [...]}` or `{"dataframe_split": {"columns": [...], "data":
    [[...], ...]}}` body (MLflow's scoring protocol), or BadRequest saying what is wrong (never a value)."""
    import orjson

    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:  # also JSON nested over 1,024 deep
        raise BadRequest("the request body is not JSON (or is nested too deeply)") from None
    if isinstance(parsed, dict) and "dataframe_split" in parsed:
        return _split_records(parsed["dataframe_split"])
    records = parsed.get("dataframe_records") if isinstance(parsed, dict) else None
    if not isinstance(records, list):
        raise BadRequest(
            'expected a JSON object {"dataframe_records": [row, ...]} or {"dataframe_split": {"columns": '
            '[...], "data": [[...], ...]}} (MLflow\'s scoring protocol)'
        )
    if not records:
        raise BadRequest("dataframe_records is empty: send at least one row")
    if not all(isinstance(record, dict) for record in records):
        raise BadRequest("dataframe_records must hold JSON objects, one per export row")
    return records


def _split_records(split) -> list[dict]:
    """pandas' `orient="split"` as MLflow reads it: column names, rows of values (an `index` is ignored)."""
    columns = split.get("columns") if isinstance(split, dict) else None
    data = split.get("data") if isinstance(split, dict) else None
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not isinstance(data, list):
        raise BadRequest('dataframe_split must be {"columns": [name, ...], "data": [[value, ...], ...]}')
    if len(set(columns)) != len(columns):
        raise BadRequest("dataframe_split names a column twice")
    if not data:
        raise BadRequest("dataframe_split's data is empty: send at least one row")
    width = len(columns)
    wrong = next((n for n, row in enumerate(data) if not isinstance(row, list) or len(row) != width), None)
    if wrong is not None:
        raise BadRequest(f"dataframe_split: data row {wrong} is not a list of {width} values, one per column")
    return [dict(zip(columns, row)) for row in data]


def _as_text(value) -> str | None:
    """A field as the CSV would hold it: strings as they are, numbers and JSON values as JSON text."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except RecursionError:  # e.g. a `metadata` object nested a thousand deep: not a field an export holds
        raise BadRequest("a record holds a JSON value nested too deeply to be a field of an export") from None


def request_table(records: list[dict]):
    """The staged columns of the records, as strings, in request order (user_ip and the rest are never read)."""
    import pyarrow as pa

    schema = pa.schema([(c, pa.string()) for c in online_sql().staged_columns])
    try:
        try:
            return pa.Table.from_pylist(records, schema=schema)  # Arrow's own loop: every value a string or null
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # a number or a JSON object where the CSV has text
            text = [{c: _as_text(r.get(c)) for c in schema.names} for r in records]
            return pa.Table.from_pylist(text, schema=schema)
    except UnicodeEncodeError:  # e.g. a lone surrogate escape: not text a CSV could hold
        raise BadRequest("a record holds a field that is not valid Unicode text") from None


@dataclass(frozen=True)
class OnlineBatch:
    """The features of one request: `rows[i]` is input record i's row in `matrix`."""

    matrix: FeatureMatrix
    rows: np.ndarray  # int64 [n_records]
    kept_plan: bool  # the models ran on the connection's kept plan (False: over the tables, planned for the request)


def _small_result(con):
    """A cursor's pending (small) result as Arrow, through numpy (NULLs masked, so nulls in Arrow).

    `con.sql(...).to_arrow_table()` of an EXECUTE materializes the rows, then runs a second query to hand
    them to Arrow: about 2 ms of a one-volunteer request (measured side by side); the cursor's Arrow output
    would make an extra copy instead, and says so in a warning.
    """
    import pyarrow as pa

    return pa.table({name: pa.array(values) for name, values in con.fetchnumpy().items()})


class _History:
    """One version of the snapshot, in memory, with a pool of connections to it."""

    def __init__(self, snapshot: Path, identity: tuple, salt: str, threads: int):
        import duckdb

        self.identity = identity
        self._salt = salt
        # Common-subexpression elimination is the optimizer's costliest pass over the staging statement
        # (the ingest's parse SQL trims each field several times) and saves nothing on a request's few rows:
        # off, one volunteer's request costs 1.5 +- 0.5 ms CPU less (measured side by side), a 10,000-row
        # request the same. The optimizer only chooses how to compute; the results are the same either way.
        self._db = duckdb.connect(config={"threads": threads, "disabled_optimizers": "common_subexpressions"})
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute(online_sql().history_sql(snapshot))
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._cursor_lock = threading.Lock()
        self.matrix_sql: str | None = None
        sql = online_sql()
        describing = self._connect()  # the column names of `features`, from the plan, once
        described = describing.execute(f"describe {sql.features_sql}").fetchall()
        # The kept rows' type, as DuckDB names it (over the empty parsed_rows: a NULL of that type); the
        # parameter is declared with exactly that type, so a request's value never forces a re-plan.
        describing.execute(sql.keep_sql, [0])
        (list_type,) = describing.execute(f"select typeof(getvariable('{KEPT_ROWS_VARIABLE}'))").fetchone()
        describing.close()
        names = [name for name, *_ in described]
        if tuple(names[: len(KEY_COLUMNS)]) != KEY_COLUMNS:
            raise AssertionError(f"features must start with {KEY_COLUMNS}, found {names[:3]}")
        self.feature_names = names[len(KEY_COLUMNS) :]
        self.kept_matrix_sql = ordered_features_sql(
            self.feature_names, table=f"({sql.kept_features_sql(list_type)}) as features"
        )
        self.matrix_sql = ordered_features_sql(self.feature_names, table=f"({sql.features_sql}) as features")

    def _connect(self):
        sql = online_sql()
        with self._cursor_lock:  # the parent connection is not for concurrent use, even to make cursors
            con = self._db.cursor()  # the same database; its own temp tables, variables and settings
        con.execute("SET TimeZone = 'UTC'")
        con.execute("set variable salt = ?", [self._salt])
        con.register("request_rows", request_table([]))
        con.execute(sql.request_view)
        con.execute(sql.stage_sql)  # an empty parsed_rows, so statements over it can be written
        if self.matrix_sql is not None:  # None only while __init__ describes the statements
            con.execute(f"prepare online_matrix as {self.kept_matrix_sql}")  # planned once per connection, reused
            # Re-planned on each EXECUTE (it reads tables), but parsed once; and `con.sql` of a plain SELECT
            # would bind it twice (once for the relation's columns, once to run it).
            con.execute(f"prepare online_matrix_direct as {self.matrix_sql}")
        return con

    @contextmanager
    def connection(self) -> Iterator:
        try:
            con = self._pool.get_nowait()
        except queue.Empty:  # every pooled connection is busy: one more (requests never wait for each other)
            con = self._connect()
        try:
            yield con
        finally:
            self._pool.put(con)


class OnlineFeatures:
    """Raw export rows + the snapshot -> `features`, through the ingest's staging SQL and the `sql/` models."""

    def __init__(self, snapshot: Path, salt: str, threads: int = 1, kept_plan_max_rows: int = KEPT_PLAN_MAX_ROWS):
        self.snapshot = snapshot
        self._salt = salt
        self._threads = threads
        self.kept_plan_max_rows = kept_plan_max_rows  # the most rows the models may read on the kept plan
        self._history: _History | None = None
        self._loading = threading.Lock()

    def load(self) -> None:
        """Load the snapshot now (the first request would otherwise)."""
        self._current()

    def _current(self) -> _History:
        """The loaded history, loaded again first when the file was replaced since."""
        try:
            stat = os.stat(self.snapshot)
        except FileNotFoundError:
            raise NoSnapshotError(
                f"No history snapshot at {self.snapshot}: materialize the `history_snapshot` asset "
                "(it is part of `engagement demo`/`run` and of the nightly refresh)."
            ) from None
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        history = self._history
        if history is None or history.identity != identity:
            with self._loading:  # one load per new file; requests that arrive meanwhile wait for it
                if self._history is None or self._history.identity != identity:
                    self._history = _History(self.snapshot, identity, self._salt, self._threads)
                history = self._history
        return history

    def build(self, body: bytes | str) -> OnlineBatch:
        """The features of every record of a `{"dataframe_records": [...]}` body; BadRequest when unusable."""

        records = parse_records(body)
        history = self._current()
        sql = online_sql()
        with history.connection() as con:
            con.register("request_rows", request_table(records))
            try:
                con.execute(sql.stage_sql)  # -> parsed_rows: typed, user key hashed, each row judged
                ((n, n_bad, ids, reasons),) = con.execute(sql.judge_sql).fetchall()
                if n_bad:
                    more = f" (and {n_bad - 10} more)" if n_bad > 10 else ""
                    raise BadRequest(f"{n_bad} of {n} record(s) cannot be scored: {'; '.join(reasons[:10])}{more}")
                # The models' kept plan, over the rows as its parameter; no rows back when there were too
                # many to keep (the list is NULL): then the same models over the tables, planned for them.
                # A request that alone is over the limit goes there at once (the gathering would cost ~11 ms).
                kept_plan = False
                if n <= self.kept_plan_max_rows:
                    con.execute(sql.keep_sql, [self.kept_plan_max_rows])
                    con.execute(f"execute online_matrix(getvariable('{KEPT_ROWS_VARIABLE}'))")
                    table = _small_result(con)
                    kept_plan = table.num_rows > 0  # n >= 1 usable rows: the kept plan has at least their features
                if not kept_plan:
                    table = con.sql("execute online_matrix_direct").to_arrow_table()
                matrix = matrix_from_arrow(table, history.feature_names)
            finally:
                con.unregister("request_rows")  # the request's raw rows are not kept after it
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(matrix.classification_id, kind="stable")
        rows = order[np.searchsorted(matrix.classification_id, ids, sorter=order)]
        if not np.array_equal(matrix.classification_id[rows], ids):
            raise AssertionError("a request row has no features row")
        return OnlineBatch(matrix=matrix, rows=rows, kept_plan=kept_plan)
