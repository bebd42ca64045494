"""Per-classification feature matrix -> windows of a volunteer's last K classifications.

One implementation shared by training and scoring, so both see exactly the
same inputs. The matrix keeps one row per classification, each user's rows by
(created_at, classification_id), users by their first classification id (not
by the salted user_key: see ORDER_BY), so that a user's history is a
contiguous block; a window is then just "this row index minus 0..K-1", masked
where it would run into the previous user's block. Windows are gathered per
batch with numpy fancy indexing; an N x K x F array is never built.

The feature list lives in one place: the columns of the `features` table after
(classification_id, user_key, created_at), in table order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES_TABLE = "features"
KEY_COLUMNS = ("classification_id", "user_key", "created_at")
# The matrix's row order: each user's history in turn, users in the order of their first classification id
# (`user_order_sql`). Not by user_key: the key is a salted hash and the salt is random per home, so the volunteers'
# order, and with it every seeded draw over rows (epoch samples, baseline samples, the forest's bootstrap, the
# volunteer bootstrap), would differ between two homes given the same export and seed.
ORDER_BY = "order by u.first_id, r.user_key, r.created_at, r.classification_id"


def user_order_sql(columns: str, where: str = "", table: str | None = None) -> str:
    """SELECT `columns` (of alias r) of `table`'s rows matching `where` (a trusted `where ...` fragment, `?`
    params allowed once), in the matrix's row order (ORDER_BY)."""
    table = table or FEATURES_TABLE
    return f"""
        with r as (select * from {table} {where}),
             u as (select user_key, min(classification_id) as first_id from r group by user_key)
        select {columns} from r join u using (user_key)
        {ORDER_BY}
    """


@dataclass(frozen=True)
class FeatureMatrix:
    """The `features` table in user-history order.

    `user_start[i]` is the row index of the first row of row i's user, which
    is both the window boundary and a cheap integer id for the user.
    """

    classification_id: np.ndarray  # int64 [N]
    user_key: np.ndarray | None  # object (str) [N]; None when loaded without keys (training)
    created_at: np.ndarray  # int64 [N], microseconds since the epoch (UTC)
    X: np.ndarray  # float32 [N, F], raw values, NaN = missing
    feature_names: list[str]
    user_start: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.classification_id)

    @property
    def position_in_user(self) -> np.ndarray:
        """How many earlier classifications of the same user the matrix holds (0 for a user's first)."""
        return np.arange(len(self), dtype=np.int64) - self.user_start


def quote_identifier(name: str) -> str:
    """Double-quote a column name read from the catalog (identifiers cannot be `?` parameters)."""
    return '"' + name.replace('"', '""') + '"'


def feature_names(con, table: str = FEATURES_TABLE) -> list[str]:
    """The model inputs: every column of `table` after the key columns, in table order."""
    rows = con.execute(
        """
        select column_name from information_schema.columns
        where table_name = ? and table_schema = current_schema()
        order by ordinal_position
        """,
        [table],
    ).fetchall()
    names = [name for (name,) in rows]
    if not names:
        raise LookupError(f"table {table!r} not found: materialize the `features` asset first")
    if tuple(names[: len(KEY_COLUMNS)]) != KEY_COLUMNS:
        raise ValueError(f"{table} must start with {KEY_COLUMNS}, found {names[:3]}")
    return names[len(KEY_COLUMNS) :]


def value_columns(names: list[str], alias: str = "") -> str:
    return ", ".join(f"cast({alias}{quote_identifier(n)} as float) as {quote_identifier(n)}" for n in names)


def ordered_features_sql(names: list[str], where_sql: str = "", table: str = FEATURES_TABLE) -> str:
    """The SELECT of the matrix; `where_sql` is a trusted fragment written by this project's code."""
    where = f"where {where_sql}" if where_sql else ""
    columns = f"r.classification_id, r.user_key, epoch_us(r.created_at) as created_us, {value_columns(names, 'r.')}"
    return user_order_sql(columns, where, table)


LOAD_CHUNK_ROWS = 1 << 20  # rows per Arrow batch read from DuckDB: ~F x 4 MB of float32 in flight


def load_feature_matrix(
    con,
    where_sql: str = "",
    params: list | None = None,
    names: list[str] | None = None,
    with_user_key: bool = True,
    chunk_rows: int = LOAD_CHUNK_ROWS,
) -> FeatureMatrix:
    """Read `features` (optionally restricted by `where_sql` with `?` params) into a FeatureMatrix.

    `names` are the feature columns when the caller already knows them (`feature_names(con)` otherwise).

    The rows stream from DuckDB in Arrow batches of `chunk_rows` straight into
    preallocated arrays (float32 X, int64 ids/times/user starts), so the peak
    is the matrix plus one batch, not the matrix twice. `with_user_key=False`
    keeps no user keys (`user_key` is then None): training needs only
    `user_start`, and at tens of millions of rows the keys as Python strings
    would cost more than the features. The whole table (no `where_sql`) is read
    in two passes: DuckDB sorts only the ordering keys (ORDER_BY) with the row
    ids, then the values stream unsorted into their rows. NULLs
    become NaN; no Python loop over rows.
    """
    names = names if names is not None else feature_names(con)
    params = params or []
    where = f"where {where_sql}" if where_sql else ""
    [(n, top)] = con.execute(f"select count(*), max(rowid) from {FEATURES_TABLE} {where}", params).fetchall()
    X = np.empty((n, len(names)), dtype=np.float32)
    classification_id = np.empty(n, dtype=np.int64)
    created_at = np.empty(n, dtype=np.int64)
    user_start = np.empty(n, dtype=np.int64)
    keys = np.empty(n, dtype=object) if with_user_key else None

    def fill(batch, at) -> None:
        for j, name in enumerate(names):
            X[at, j] = batch.column(name).to_numpy(zero_copy_only=False)
        classification_id[at] = batch.column("classification_id").to_numpy(zero_copy_only=False)
        created_at[at] = batch.column("created_us").to_numpy(zero_copy_only=False)

    # The whole table (training): DuckDB sorts only the keys and row ids, then the values are read unsorted and
    # put in place; sorting every value with them held about 4 bytes of DuckDB memory per value on top.
    narrow = not where_sql and n > 0
    if narrow:
        position = np.full(top + 1, -1, dtype=np.int64)  # rowid -> row of the matrix
        order_sql = user_order_sql("r.row_id, r.user_key", table=f"(select rowid as row_id, * from {FEATURES_TABLE})")
    else:
        order_sql = ordered_features_sql(names, where_sql)
    offset, last_key, last_start = 0, None, 0
    for batch in con.sql(order_sql, params=params).to_arrow_reader(chunk_rows):
        m = batch.num_rows
        if not m:
            continue
        if offset + m > n:
            raise RuntimeError(f"`{FEATURES_TABLE}` grew while it was read ({n:,} rows counted)")
        rows = slice(offset, offset + m)
        if narrow:
            position[batch.column("row_id").to_numpy(zero_copy_only=False)] = np.arange(offset, offset + m)
        else:
            fill(batch, rows)
        key = batch.column("user_key").to_numpy(zero_copy_only=False)
        user_start[rows] = user_starts(key, offset, last_key, last_start)
        if keys is not None:
            keys[rows] = key
        offset, last_key, last_start = offset + m, key[-1], int(user_start[offset + m - 1])
    if narrow:
        values_sql = f"""select rowid as row_id, classification_id, epoch_us(created_at) as created_us,
                         {value_columns(names)} from {FEATURES_TABLE}"""
        filled = 0
        for batch in con.sql(values_sql).to_arrow_reader(chunk_rows):
            at = position[batch.column("row_id").to_numpy(zero_copy_only=False)]
            if (at < 0).any():
                raise RuntimeError(f"`{FEATURES_TABLE}` changed while it was read: a row appeared")
            fill(batch, at)
            filled += batch.num_rows
        if filled != n:
            offset = filled
    if offset != n:
        raise RuntimeError(f"`{FEATURES_TABLE}` changed while it was read: {offset:,} rows of {n:,} counted")
    return FeatureMatrix(classification_id, keys, created_at, X, names, user_start)


def matrix_from_arrow(table, names: list[str]) -> FeatureMatrix:
    """A FeatureMatrix from the Arrow result of `ordered_features_sql` (already in user-history order)."""
    n = table.num_rows
    X = np.empty((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        X[:, j] = table.column(name).to_numpy()
    user_key = table.column("user_key").to_numpy()
    return FeatureMatrix(
        classification_id=table.column("classification_id").to_numpy().astype(np.int64, copy=False),
        user_key=user_key,
        created_at=table.column("created_us").to_numpy().astype(np.int64, copy=False),
        X=X,
        feature_names=names,
        user_start=user_starts(user_key),
    )


def user_starts(user_key: np.ndarray, offset: int = 0, previous_key=None, previous_start: int = 0) -> np.ndarray:
    """For rows sorted by user, the index of each row's user's first row.

    For a chunk that begins at row `offset` of the whole: `previous_key` is the
    key of the row before it and `previous_start` that row's user start, so a
    user whose rows span two chunks keeps one start.
    """
    n = len(user_key)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = user_key[1:] != user_key[:-1]
    if previous_key is not None and user_key[0] == previous_key:
        first[0] = False
    at = np.arange(offset, offset + n, dtype=np.int64)
    return np.maximum.accumulate(np.where(first, at, previous_start))


def window_indices(user_start: np.ndarray, rows: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices [B, K] of each window (oldest first, `rows` last) and the mask of real (same-user) steps."""
    rows = np.asarray(rows, dtype=np.int64)
    idx = rows[:, None] - np.arange(window - 1, -1, -1, dtype=np.int64)[None, :]
    real = idx >= user_start[rows][:, None]
    return np.where(real, idx, rows[:, None]), real


def gather_windows(matrix: FeatureMatrix, rows: np.ndarray, window: int) -> np.ndarray:
    """float32 [B, K, F]: the last `window` classifications of each row's user, up to and including it.

    Left-padded with all-NaN rows where the user has fewer than `window`
    classifications so far; the last step is always the row itself.
    """
    idx, real = window_indices(matrix.user_start, rows, window)
    out = matrix.X[idx]
    out[~real] = np.nan
    return out
